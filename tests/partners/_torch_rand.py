"""Random but realistic weights for a torch model (used by make_mmseg.py and make_ssseg.py).

Every conv gets He-normal weights (and a small random bias if it has one), every BatchNorm a random affine
(gamma in [0.5, 1.5], never 0). The running statistics are then measured on random calibration images (so
activations stay O(1) through 50 layers) and perturbed (mean shifted, variance scaled by 0.7..1.3), so eval
mode differs clearly from batch statistics and a loader that drops or swaps them fails the comparison.
"""
import torch
import torch.nn as nn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def randomise(model, seed, calibrate, calib_batches, scaled_bns=()):
    """Randomise ``model`` in place; ``calibrate(x)`` runs a train-mode forward on each normalised batch ``x``
    of ``calib_batches`` (numpy float32 [B, 3, H, W]: images like the test one, not the test one itself).

    ``scaled_bns``: (BatchNorm, factor) pairs whose affine is multiplied by ``factor``. Used on the BNs that feed
    PAM and CAM: their energies are unscaled dot products over 64 channels or all positions, and with O(1)
    features the softmax saturates to one-hot and amplifies a 1e-7 input change to 1e-3 in the logits. Smaller
    inputs give moderate energies (the BN after each attention module re-normalises), so a comparison with
    another framework can use tight tolerances and still exercises the softmax."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.05)
            elif isinstance(mod, _BN):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
                mod.reset_running_stats()
                mod.momentum = None  # cumulative average over the calibration batches
        for bn, factor in scaled_bns:
            bn.weight.mul_(factor)
            bn.bias.mul_(factor)
        model.train()
        for batch in calib_batches:
            calibrate(torch.from_numpy(batch))
        for mod in model.modules():
            if isinstance(mod, _BN):
                mod.momentum = 0.1
                std = mod.running_var.sqrt()
                mod.running_mean.add_(torch.randn(mod.running_mean.shape, generator=g) * 0.1 * std)
                mod.running_var.mul_(torch.rand(mod.running_var.shape, generator=g) * 0.6 + 0.7)
    model.eval()
    return g


def set_scale(param, generator, low=0.3, high=1.0):
    """Give an attention gamma (0 at init) a random non-zero value; returns it as a float."""
    with torch.no_grad():
        value = float(torch.rand((), generator=generator) * (high - low) + low)
        param.fill_(value)
    return value
