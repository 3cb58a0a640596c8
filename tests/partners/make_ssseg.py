"""sssegmentation's DANet R-50 (output stride 8 and 16) with random weights: its own checkpoint and logits.

The model is built by ssseg's ``BuildSegmentor`` from the Cityscapes config of ``ssseg/configs/danet``
(``danet_resnet50os8_cityscapes.py`` / ``danet_resnet50os16_cityscapes.py``; the configs are not shipped in
the PyPI sdist, so their values are repeated in ``segmentor_cfg`` below) with ``BatchNorm2d`` instead of
``SyncBatchNorm`` and no pretrained backbone. It gets random weights incl. BN statistics and non-zero
attention gammas, and for each output stride (``d8``, ``d16``) the script writes:

- ``ssseg_r50_<d>.pth``: what ssseg's ``train.py`` saves with ``saveckpts``: ``{'cur_epoch', 'cur_iter',
  'optimizer', 'model'}`` (``scheduler.state()`` plus the model's state_dict); ``test.py`` loads ``['model']``.
  It is reloaded into a fresh model with ``loadckpts`` + strict ``load_state_dict`` as a check.
- ``ssseg_r50_<d>.npz``: ``image`` (uint8 RGB), ``input`` (float32 [1, 3, 97, 129], by ssseg's own
  ``Normalize`` + ``ToTensor`` test pipeline: RGB, ImageNet mean/std), ``logits`` (as ``test.py``:
  ``auginference`` -> the fused logits at 1/8 or 1/16, resized to the image size with ``align_corners``),
  ``logits_pam`` / ``logits_cam`` (``decoder_pam`` / ``decoder_cam``, resized the same way), ``*_lowres`` (all
  three before the resize), ``aux`` (auxiliary decoder on C3, resized), ``mean``, ``std``, ``align_corners``,
  ``output_stride``, ``gamma_pam``, ``gamma_cam``.

Run with the partner venv: ``.venv-partners/bin/python tests/partners/make_ssseg.py OUT_DIR``.
torchvision is not installed (its wheel pulls a CUDA torch); ssseg imports it only for SAM/MaskFormer, so it is
replaced by a stub module here.
"""
import argparse
import copy
import importlib.machinery
import os
import sys
import types
import warnings

import numpy as np
import torch
import torch.nn.functional as F
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

CE = {'type': 'CrossEntropyLoss', 'scale_factor': 1.0, 'ignore_index': 255, 'reduction': 'mean'}
# ssseg/configs/danet/base_cfg.py + danet_resnet50os{8,16}_cityscapes.py (sssegmentation 1.7.0), norm BN
SEGMENTOR_CFG = {
    'type': 'DANet', 'num_classes': 19, 'benchmark': True, 'align_corners': False, 'backend': 'nccl',
    'work_dir': 'danet_resnet50os8_cityscapes', 'logfilepath': '', 'log_interval_iterations': 50,
    'eval_interval_epochs': 10, 'save_interval_epochs': 1, 'resultsavepath': '',
    'norm_cfg': {'type': 'BatchNorm2d'}, 'act_cfg': {'type': 'ReLU', 'inplace': True},
    'backbone': {
        'type': 'ResNet', 'depth': 50, 'structure_type': 'resnet50conv3x3stem',
        'pretrained': False, 'outstride': 8, 'use_conv3x3_stem': True, 'selected_indices': (2, 3),
    },
    'head': {'in_channels': 2048, 'feats_channels': 512, 'transform_channels': 64, 'dropout': 0.1},
    'auxiliary': {'in_channels': 1024, 'out_channels': 512, 'dropout': 0.1},
    'losses': {
        'loss_aux': {**CE, 'scale_factor': 0.4}, 'loss_cls_pam': CE, 'loss_cls_cam': CE, 'loss_cls_pamcam': CE,
    },
    'inference': {
        'forward': {'mode': 'whole', 'cropsize': None, 'stride': None},
        'tta': {'multiscale': [1], 'flip': False, 'use_probs_before_resize': False},
    },
    'scheduler': {
        'type': 'PolyScheduler', 'max_epochs': 220, 'power': 0.9,
        'optimizer': {'type': 'SGD', 'lr': 0.01, 'momentum': 0.9, 'weight_decay': 5e-4, 'params_rules': {}},
    },
}
ITERS_PER_EPOCH = 371  # 2975 Cityscapes train images / batch 8, drop_last


def stub_torchvision():
    """Stand-ins for the torchvision modules ssseg imports at module level (SAM, MaskFormer only)."""
    for name in ["torchvision", "torchvision.transforms", "torchvision.transforms.functional",
                 "torchvision.ops", "torchvision.ops.boxes"]:
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        mod.__path__ = []

        def missing(attr, name=name):
            if attr.startswith("_"):
                raise AttributeError(attr)

            def fail(*args, **kwargs):
                raise RuntimeError(f"{name}.{attr}: torchvision is a stub in this environment")
            return fail

        mod.__getattr__ = missing
        sys.modules[name] = mod


def segmentor_cfg(outstride):
    cfg = copy.deepcopy(SEGMENTOR_CFG)
    cfg['backbone']['outstride'] = outstride
    cfg['work_dir'] = f'danet_resnet50os{outstride}_cityscapes'
    return cfg


def branches(model, images):
    """The fused, PAM and CAM logits at feature resolution plus the auxiliary one, by ssseg's own modules."""
    selected = model.cfg['backbone']['selected_indices']
    feats = model.transforminputs(model.backbone_net(images), selected_indices=selected)
    pam = model.pam_out_conv(model.pam_net(model.pam_in_conv(feats[-1])))
    cam = model.cam_out_conv(model.cam_net(model.cam_in_conv(feats[-1])))
    aux = model.auxiliary_decoder(feats[-2])
    return model.decoder_pamcam(pam + cam), model.decoder_pam(pam), model.decoder_cam(cam), aux


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outstrides", default="8,16")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    warnings.filterwarnings("ignore")
    stub_torchvision()
    from ssseg.modules import BuildOptimizer, BuildScheduler, BuildSegmentor, loadckpts, saveckpts
    from ssseg.modules.datasets.pipelines.transforms import Normalize, ToTensor

    # ssseg's own test pipeline on a cv2-loaded (BGR) image: Normalize (to RGB, ImageNet mean/std), ToTensor.
    image = fixed_image(args.seed)
    h, w = image.shape[:2]
    sample = {'image': np.ascontiguousarray(image[..., ::-1])}
    inputs = ToTensor()(Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))(sample))['image'][None]
    assert np.allclose(inputs.numpy(), normalise(image, IMAGENET_MEAN, IMAGENET_STD), atol=1e-5)
    for outstride in (int(s) for s in args.outstrides.split(",")):
        seed = args.seed + 10 + outstride  # per model, whichever others are made in the same run
        torch.manual_seed(seed)
        cfg = segmentor_cfg(outstride)
        model = BuildSegmentor(segmentor_cfg=copy.deepcopy(cfg), mode='TEST')
        g = randomise(model, seed, lambda x, model=model: branches(model, x),
                      calibration_batches(seed, IMAGENET_MEAN, IMAGENET_STD),
                      [(model.pam_in_conv[1], PAM_IN_SCALE), (model.cam_in_conv[1], CAM_IN_SCALE)])
        gamma_pam = set_scale(model.pam_net.gamma.scale, g)
        gamma_cam = set_scale(model.cam_net.gamma.scale, g)
        assert model.mode == 'TEST' and not model.training

        align = model.align_corners
        with torch.no_grad():
            # ssseg/test.py: auginference, then each logit map resized to the image's size with align_corners.
            logits = model.auginference(inputs)[0]
            logits = F.interpolate(logits, size=(h, w), mode='bilinear', align_corners=align)
            lowres = branches(model, inputs)
            full = [F.interpolate(t, size=(h, w), mode='bilinear', align_corners=align) for t in lowres]
        assert torch.allclose(full[0], logits, atol=1e-5), "forward() and the modules called one by one disagree"

        # ssseg/train.py: state_dict = scheduler.state(); state_dict['model'] = segmentor.state_dict(); saveckpts
        optimizer = BuildOptimizer(model, cfg['scheduler']['optimizer'])
        scheduler_cfg = copy.deepcopy(cfg['scheduler'])
        scheduler_cfg.update({'lr': cfg['scheduler']['optimizer']['lr'], 'iters_per_epoch': ITERS_PER_EPOCH,
                              'params_rules': cfg['scheduler']['optimizer']['params_rules']})
        scheduler = BuildScheduler(optimizer=optimizer, scheduler_cfg=scheduler_cfg)
        scheduler.cur_epoch, scheduler.cur_iter = scheduler_cfg['max_epochs'], scheduler.max_iters
        state_dict = scheduler.state()
        state_dict['model'] = model.state_dict()
        name = f"ssseg_r50_d{outstride}"
        pth = out_path(args.out_dir, name + ".pth")
        saveckpts(state_dict, pth, make_soft_link=False)
        print(f"wrote {pth}")

        fresh = BuildSegmentor(segmentor_cfg=copy.deepcopy(cfg), mode='TEST')
        fresh.load_state_dict(loadckpts(pth)['model'], strict=True)
        fresh.eval()
        with torch.no_grad():
            again = F.interpolate(fresh.auginference(inputs)[0], size=(h, w), mode='bilinear', align_corners=align)
        assert torch.equal(again, logits), "reloaded checkpoint gives other logits"

        # The same network in float64: float32 rounding, amplified by random weights, moves these logits by
        # ~2e-5 of their range between any two implementations; in float64 an exact import agrees to ~1e-9.
        fresh.double()
        with torch.no_grad():
            logits64 = F.interpolate(fresh.auginference(inputs.double())[0], size=(h, w), mode='bilinear',
                                     align_corners=align)

        write_npz(out_path(args.out_dir, name + ".npz"), image=image, input=inputs.numpy(), logits=logits.numpy(),
                  logits64=logits64.numpy(),
                  logits_pam=full[1].numpy(), logits_cam=full[2].numpy(), aux=full[3].numpy(),
                  fused_lowres=lowres[0].numpy(), pam_lowres=lowres[1].numpy(), cam_lowres=lowres[2].numpy(),
                  mean=IMAGENET_MEAN, std=IMAGENET_STD, align_corners=align, output_stride=outstride,
                  gamma_pam=gamma_pam, gamma_cam=gamma_cam)


if __name__ == "__main__":
    main()
