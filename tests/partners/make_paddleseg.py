"""PaddleSeg 2.8's DANet (ResNet50_vd, output stride 8) with random weights: its own .pdparams and logits.

The model is PaddleSeg's ``configs/danet/danet_resnet50_os8_cityscapes_1024x512_80k.yml`` (``DANet`` with
``backbone: ResNet50_vd, output_stride: 8``, ``backbone_indices: [2, 3]``, 19 classes, ``align_corners``
False; the yml files are not in the wheel, so the builder's components are called with those values), with
no pretrained backbone. It gets random weights incl. BN statistics and non-zero attention gammas; on the CPU
PaddleSeg's ``SyncBatchNorm`` is a plain ``BatchNorm2D``. The script writes:

- ``paddleseg_r50_os8.pdparams``: ``paddle.save(model.state_dict(), ...)``, as PaddleSeg's trainer saves
  ``model.pdparams``; it is reloaded with ``paddleseg.utils.utils.load_entire_model`` as a check.
- ``paddleseg_r50_os8.npz``: ``image`` (uint8 RGB), ``input`` (float32 [1, 3, 97, 129], normalised by PaddleSeg's
  own ``Compose([Normalize()])``: RGB, ``(x / 255 - 0.5) / 0.5``, i.e. mean = std = 127.5 on 0..255 — NOT
  ImageNet), ``logits`` (``paddleseg.core.infer.inference``: the fused logits, resized in ``DANet.forward``
  with ``align_corners=False, align_mode=1``), ``logits_pam`` (the PAM features through ``aux_head_pam``,
  the classifier PaddleSeg builds but never uses), ``logits_pam_paddleseg`` (PAM features through
  ``aux_head_cam``: what PaddleSeg's training computes, a known bug), ``logits_cam`` (``aux_head_cam``),
  ``aux`` (``aux_head``: 1x1 on C4), each resized the same way, ``*_lowres`` (before the resize), ``mean``,
  ``std`` (0..255 units), ``align_corners``, ``align_mode``, ``gamma_pam``, ``gamma_cam``.

Run with the Paddle 2.6 venv: ``.venv-paddle26/bin/python tests/partners/make_paddleseg.py OUT_DIR``.
"""
import zlib  # noqa: F401, I001  (before paddle: importing zlib after Paddle 2.6.2 crashes, and scipy needs it)

import argparse
import warnings

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from _common import CAM_IN_SCALE, PAM_IN_SCALE, calibration_batches, fixed_image, normalise, out_path, write_npz

PADDLESEG_MEAN = (127.5, 127.5, 127.5)  # Normalize(mean=(0.5,), std=(0.5,)) on x / 255
PADDLESEG_STD = (127.5, 127.5, 127.5)


def build():
    from paddleseg.cvlibs import manager

    backbone = manager.BACKBONES["ResNet50_vd"](output_stride=8, pretrained=None)
    return manager.MODELS["DANet"](num_classes=19, backbone=backbone, backbone_indices=[2, 3], align_corners=False)


def randomise(model, seed, calib_batches, scaled_bns=()):
    """He-normal convs (small random biases), BN gamma in [0.5, 1.5]; BN statistics measured on the calibration
    images (momentum 0: the last batch's statistics), then shifted / scaled at random; the BNs in ``scaled_bns``
    get their affine multiplied by a factor (moderate attention energies): all as _torch_rand.randomise does."""
    rng = np.random.RandomState(seed)
    bns = []
    for layer in model.sublayers():
        if isinstance(layer, nn.Conv2D):
            fan_in = int(np.prod(layer.weight.shape[1:]))
            layer.weight.set_value(rng.normal(0, (2.0 / fan_in) ** 0.5, layer.weight.shape).astype("float32"))
            if layer.bias is not None:
                layer.bias.set_value(rng.normal(0, 0.05, layer.bias.shape).astype("float32"))
        elif isinstance(layer, nn.BatchNorm2D):
            layer.weight.set_value(rng.uniform(0.5, 1.5, layer.weight.shape).astype("float32"))
            layer.bias.set_value(rng.normal(0, 0.1, layer.bias.shape).astype("float32"))
            bns.append((layer, layer._momentum))
            layer._momentum = 0.0
    for bn, factor in scaled_bns:
        bn.weight.set_value(bn.weight.numpy() * factor)
        bn.bias.set_value(bn.bias.numpy() * factor)
    model.train()
    with paddle.no_grad():
        model(paddle.to_tensor(np.concatenate(calib_batches)))
    for layer, momentum in bns:
        layer._momentum = momentum
        var = layer._variance.numpy()
        layer._mean.set_value(layer._mean.numpy() + rng.normal(0, 0.1, var.shape).astype("float32") * np.sqrt(var))
        layer._variance.set_value(var * rng.uniform(0.7, 1.3, var.shape).astype("float32"))
    model.eval()
    return rng


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    paddle.set_device("cpu")
    import paddleseg
    from paddleseg.core.infer import inference
    from paddleseg.transforms import Compose, Normalize
    from paddleseg.utils import logger
    from paddleseg.utils.utils import load_entire_model

    logger.log_level = 0  # PaddleSeg's own log lines: errors only
    seed = args.seed + 20
    paddle.seed(seed)
    model = build()
    head = model.head
    rng = randomise(model, seed, calibration_batches(seed, PADDLESEG_MEAN, PADDLESEG_STD),
                    [(head.position_conv._batch_norm, PAM_IN_SCALE), (head.channel_conv._batch_norm, CAM_IN_SCALE)])
    gamma_pam, gamma_cam = (float(rng.uniform(0.3, 1.0)) for _ in range(2))
    head.pam.gamma.set_value(np.array([gamma_pam], "float32"))
    head.cam.gamma.set_value(np.array([gamma_cam], "float32"))

    # PaddleSeg's own pre-processing of a cv2-loaded (BGR) image: to RGB, x / 255, (x - 0.5) / 0.5, HWC -> CHW.
    image = fixed_image(args.seed)
    h, w = image.shape[:2]
    data = Compose([Normalize()])({"img": np.ascontiguousarray(image[..., ::-1]).astype("float32")})
    x = np.asarray(data["img"], "float32")[None]
    assert np.allclose(x, normalise(image, PADDLESEG_MEAN, PADDLESEG_STD), atol=1e-6)
    im = paddle.to_tensor(x)

    def up(t):
        return F.interpolate(t, size=[h, w], mode="bilinear", align_corners=False, align_mode=1)

    with paddle.no_grad():
        logits = inference(model, im).numpy()
        c4 = model.backbone(im)[3]
        chan = head.conv1(head.cam(head.channel_conv(c4)))
        pos = head.conv2(head.pam(head.position_conv(c4)))
        low = dict(fused=head.cls_head(pos + chan), pam=head.aux_head_pam(pos), pam_paddleseg=head.aux_head_cam(pos),
                   cam=head.aux_head_cam(chan), aux=head.aux_head(c4))
        full = {k: up(v).numpy() for k, v in low.items()}
    assert np.allclose(full["fused"], logits, atol=1e-5), "inference() and the head called piece by piece disagree"

    path = out_path(args.out_dir, "paddleseg_r50_os8.pdparams")
    paddle.save(model.state_dict(), path)
    print(f"wrote {path}")
    fresh = build()
    load_entire_model(fresh, path)
    fresh.eval()
    with paddle.no_grad():
        again = inference(fresh, im).numpy()
    assert np.array_equal(again, logits), "reloaded .pdparams gives other logits"

    write_npz(out_path(args.out_dir, "paddleseg_r50_os8.npz"), image=image, input=x, logits=logits,
              logits_pam=full["pam"], logits_pam_paddleseg=full["pam_paddleseg"], logits_cam=full["cam"],
              aux=full["aux"], fused_lowres=low["fused"].numpy(), pam_lowres=low["pam"].numpy(),
              cam_lowres=low["cam"].numpy(), mean=PADDLESEG_MEAN, std=PADDLESEG_STD, align_corners=False,
              align_mode=1, gamma_pam=gamma_pam, gamma_cam=gamma_cam,
              versions=f"paddle {paddle.__version__}, paddleseg {paddleseg.__version__}")


if __name__ == "__main__":
    main()
