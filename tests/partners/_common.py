"""Helpers shared by the partner generator scripts: the fixed test image and the npz writer.

Only numpy here: the scripts run in the partner environments (torch or Paddle 2.6), not in ours.
"""
import os

import numpy as np

HEIGHT, WIDTH = 97, 129  # odd sizes: the resize to the input size is not an exact multiple of the stride
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255
IMAGENET_STD = (58.395, 57.12, 57.375)
# Factors on the affine of the BNs in front of PAM and CAM (see _torch_rand.randomise): moderate attention energies.
PAM_IN_SCALE = 0.08
CAM_IN_SCALE = 0.02


def fixed_image(seed=0, height=HEIGHT, width=WIDTH):
    """A fixed RGB uint8 image [H, W, 3]: smooth colour blobs plus noise, so attention has structure to work on."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for _ in range(6):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(8, 40)
        colour = rng.uniform(0, 255, size=3)
        weight = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))[..., None]
        img = img * (1 - weight) + colour * weight
    img += rng.normal(0, 20, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def normalise(image, mean, std):
    """uint8 RGB [H, W, 3] -> float32 [1, 3, H, W], (x - mean) / std per channel."""
    x = (image.astype(np.float64) - np.asarray(mean)) / np.asarray(std)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def calibration_batches(seed, mean, std, count=2, batch=2):
    """Normalised images drawn like the test image (other seeds) for measuring BN statistics."""
    return [np.concatenate([normalise(fixed_image(1000 + seed * 100 + i * batch + j), mean, std)
                            for j in range(batch)]) for i in range(count)]


def write_npz(path, **arrays):
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    print(f"wrote {path}")


def out_path(out_dir, name):
    os.makedirs(out_dir, exist_ok=True)
    return os.path.join(out_dir, name)
