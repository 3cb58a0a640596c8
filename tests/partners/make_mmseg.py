"""mmsegmentation's DANet R-50-D8 with random weights: its own checkpoint file and its own logits.

Builds the model from mmseg's shipped config (``configs/danet/danet_r50-d8_4xb2-40k_cityscapes-512x1024.py``
and, with ``--variants 769``, the 769x769 one whose heads use ``align_corners=True``), with BN instead of
SyncBN and no pretrained backbone, gives it random weights incl. BN statistics and non-zero attention gammas,
and writes for each variant:

- ``mmseg_r50_d8[_769].pth``: ``{'meta': {...,'CLASSES', 'PALETTE', 'config', 'dataset_meta'}, 'state_dict'}``,
  as a released mmseg checkpoint (runner checkpoint with the optimizer stripped), saved by mmengine's
  ``save_checkpoint``. It is reloaded into a fresh model with mmengine's ``load_checkpoint`` as a check.
- ``mmseg_r50_d8[_769].npz``: ``image`` (uint8 RGB), ``input`` (float32 [1, 3, 97, 129], normalised by mmseg's
  own ``SegDataPreProcessor``: ImageNet mean/std on RGB), ``logits`` (``EncoderDecoder.predict``: the fused
  logits at input size, resized with the head's ``align_corners``), ``logits_pam`` / ``logits_cam`` (the
  branch classifiers, resized the same way), ``*_lowres`` (all three at 1/8), ``aux`` (the FCN auxiliary
  head, resized), ``mean``, ``std``, ``align_corners``, ``gamma_pam``, ``gamma_cam``.

Run with the partner venv: ``.venv-partners/bin/python tests/partners/make_mmseg.py OUT_DIR``.
"""
import argparse
import importlib.machinery
import logging
import os
import sys
import time
import types
import warnings

import numpy as np
import torch
from _common import (
    CAM_IN_SCALE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAM_IN_SCALE,
    calibration_batches,
    fixed_image,
    normalise,
    out_path,
    write_npz,
)
from _torch_rand import randomise, set_scale

CONFIGS = {
    "": "danet/danet_r50-d8_4xb2-40k_cityscapes-512x1024.py",
    "769": "danet/danet_r50-d8_4xb2-40k_cityscapes-769x769.py",
}


def stub_mmcv_ops():
    """mmcv-lite has no compiled ops, but mmseg imports ``mmcv.ops`` at module level (point_sample, focal loss,
    ...; nothing DANet uses): a stand-in module whose functions raise if ever called."""
    mod = types.ModuleType("mmcv.ops")
    mod.__spec__ = importlib.machinery.ModuleSpec("mmcv.ops", None, is_package=True)
    mod.__path__ = []

    def missing(attr):
        if attr.startswith("_"):
            raise AttributeError(attr)

        def fail(*args, **kwargs):
            raise RuntimeError(f"mmcv.ops.{attr} needs the full mmcv (compiled ops); mmcv-lite is installed")
        return fail

    mod.__getattr__ = missing
    sys.modules["mmcv.ops"] = mod


def build(config_rel):
    import mmseg
    from mmengine.config import Config
    from mmseg.registry import MODELS

    cfg = Config.fromfile(os.path.join(os.path.dirname(mmseg.__file__), ".mim", "configs", config_rel))
    bn = dict(type="BN", requires_grad=True)
    cfg.model.pretrained = None
    cfg.model.backbone.norm_cfg = bn
    cfg.model.decode_head.norm_cfg = bn
    cfg.model.auxiliary_head.norm_cfg = bn
    cfg.norm_cfg = bn
    return cfg, MODELS.build(cfg.model)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="512x1024,769",
                        help="comma list: 512x1024 (align_corners=False) and/or 769 (align_corners=True)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    warnings.filterwarnings("ignore")  # mmcv-lite / deprecation notices: one line per file written is the output
    stub_mmcv_ops()
    import mmcv
    import mmengine
    import mmseg
    from mmengine.runner.checkpoint import get_state_dict, load_checkpoint, save_checkpoint, weights_to_cpu
    from mmseg.datasets import CityscapesDataset
    from mmseg.models.utils import resize
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.ERROR)
    image = fixed_image(args.seed)
    for variant in (v.strip() for v in args.variants.split(",")):
        suffix = "" if variant == "512x1024" else variant
        config_rel = CONFIGS[suffix]
        seed = args.seed + (1 if suffix else 0)  # per model, whichever others are made in the same run
        torch.manual_seed(seed)
        cfg, model = build(config_rel)
        head = model.decode_head

        def calibrate(x, model=model):
            feats = model.extract_feat(x)
            model.decode_head.forward(feats)
            model.auxiliary_head.forward(feats)

        g = randomise(model, seed, calibrate, calibration_batches(seed, IMAGENET_MEAN, IMAGENET_STD),
                      [(head.pam_in_conv.bn, PAM_IN_SCALE), (head.cam_in_conv.bn, CAM_IN_SCALE)])
        gamma_pam = set_scale(head.pam.gamma.scale, g)
        gamma_cam = set_scale(head.cam.gamma.scale, g)

        # mmseg's own pre-processing: a BGR uint8 CHW tensor (as loaded by cv2) -> RGB, ImageNet mean/std.
        h, w = image.shape[:2]
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), padding_size=[0, 0, 0, 0])
        sample = SegDataSample(metainfo=meta)
        bgr = torch.from_numpy(np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1)))
        data = model.data_preprocessor(dict(inputs=[bgr], data_samples=[sample]), False)
        inputs = data["inputs"]
        mean, std = model.data_preprocessor.mean.flatten().numpy(), model.data_preprocessor.std.flatten().numpy()
        assert np.allclose(inputs.numpy(), normalise(image, mean, std), atol=1e-5)

        with torch.no_grad():
            logits = model.predict(inputs, data["data_samples"])[0].seg_logits.data[None]
            feats = model.extract_feat(inputs)
            fused_lr, pam_lr, cam_lr = head.forward(feats)
            aux = model.auxiliary_head.forward(feats)
            up = dict(size=(h, w), mode="bilinear", align_corners=head.align_corners)
            branch = [resize(t, **up) for t in (fused_lr, pam_lr, cam_lr, aux)]
        assert torch.allclose(branch[0], logits, atol=1e-5), "predict() and decode_head + resize disagree"

        # A released mmseg checkpoint: the runner's {'meta', 'state_dict', 'optimizer'} with the optimizer
        # removed by tools/publish_model. 0.x runners stored CLASSES/PALETTE/config, 1.x dataset_meta/cfg.
        classes = list(CityscapesDataset.METAINFO["classes"])
        palette = [list(p) for p in CityscapesDataset.METAINFO["palette"]]
        ckpt_meta = dict(
            env_info=f"torch {torch.__version__}", config=cfg.pretty_text, cfg=cfg.pretty_text, seed=seed,
            exp_name=os.path.basename(config_rel), mmseg_version=mmseg.__version__, mmcv_version=mmcv.__version__,
            mmengine_version=mmengine.__version__, CLASSES=classes, PALETTE=palette,
            dataset_meta=dict(classes=classes, palette=palette), epoch=0, iter=40000,
            time=time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(0)))
        name = "mmseg_r50_d8" + (f"_{suffix}" if suffix else "")
        pth = out_path(args.out_dir, name + ".pth")
        save_checkpoint(dict(meta=ckpt_meta, state_dict=weights_to_cpu(get_state_dict(model))), pth)
        print(f"wrote {pth}")

        # Round trip through mmengine's loader into a fresh model: the file alone reproduces the logits.
        _, fresh = build(config_rel)
        load_checkpoint(fresh, pth, map_location="cpu", strict=True, logger="silent")
        fresh.eval()
        with torch.no_grad():
            again = fresh.predict(inputs, data["data_samples"])[0].seg_logits.data[None]
        assert torch.equal(again, logits), "reloaded checkpoint gives other logits"

        # The same network in float64: float32 rounding, amplified by random weights, moves these logits by
        # ~2e-5 of their range between any two implementations; in float64 an exact import agrees to ~1e-9.
        fresh.double()
        with torch.no_grad():
            logits64 = resize(fresh.decode_head.forward(fresh.extract_feat(inputs.double()))[0], **up)

        write_npz(out_path(args.out_dir, name + ".npz"), image=image, input=inputs.numpy(), logits=logits.numpy(),
                  logits64=logits64.numpy(),
                  logits_pam=branch[1].numpy(), logits_cam=branch[2].numpy(), aux=branch[3].numpy(),
                  fused_lowres=fused_lr.numpy(), pam_lowres=pam_lr.numpy(), cam_lowres=cam_lr.numpy(),
                  mean=mean, std=std, align_corners=head.align_corners, gamma_pam=gamma_pam, gamma_cam=gamma_cam)


if __name__ == "__main__":
    main()
