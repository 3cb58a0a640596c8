"""mmsegmentation's DANet checkpoints (``DAHead`` on ``ResNetV1c``) in this project's names and config.

Read from open-mmlab/mmsegmentation v1.2.2 (the package in ``.venv-partners``): ``mmseg/models/decode_heads/
da_head.py`` (PAM is a ``SelfAttentionBlock`` with biased 1x1 ``{query,key,value}_project``; ``Scale`` gammas hold a
0-d ``scale``; classifiers ``conv_seg`` (fused), ``pam_conv_seg``, ``cam_conv_seg``), ``mmseg/models/backbones/
resnet.py`` and ``mmseg/models/utils/res_layer.py`` (ResNetV1c: deep stem ``stem.{0,3,6}`` convs + ``stem.{1,4,7}``
BNs, plain strided 1x1 shortcuts, ``contract_dilation`` halves a stage's first dilation, ``multi_grid`` holds
absolute dilations), ``configs/_base_/models/danet_r50-d8.py`` and ``configs/danet/*``. The file is mmengine's
(mmcv's in 0.x) ``save_checkpoint``: ``{'meta', 'state_dict'}``; ``meta`` has the config text (``config`` in 0.x,
``cfg`` in 1.x) and the class names and palette (``CLASSES`` / ``PALETTE`` in 0.x, ``dataset_meta`` in 1.x).

The settings come from the config text when the file has it (read as text, never executed); else from mmseg's
released DANet configs: output stride 8 (all are ``-d8``), halved first dilation, no multi-grid, and
``align_corners=False`` (512x1024 Cityscapes, ADE20K, VOC; the 769x769 Cityscapes configs use True).
"""
import re

from danet.engine.common import arch
from danet.errors import UserError
from danet.weights.sources.common import Imported, Renamer, strip_prefix, torch_resnet, unwrap

NAME = "mmseg"
DESCRIPTION = "mmsegmentation DANet (DAHead + ResNetV1c), e.g. danet_r50-d8_512x1024_40k_cityscapes_*.pth"
RELEASED = dict(output_stride=8, halve_first_dilation=True, multi_grid=False, align_corners=False)
_HEAD = "decode_head."
_CONV_BN = (("pam_in_conv", "pam_in"), ("cam_in_conv", "cam_in"), ("pam_out_conv", "pam_out"),
            ("cam_out_conv", "cam_out"))
_CLASSIFIERS = (("conv_seg", "cls_fused"), ("pam_conv_seg", "cls_pam"), ("cam_conv_seg", "cls_cam"))
# mmseg ResNet strides of layer3, layer4 -> output stride; the dilations it needs are in resnet.OUTPUT_STRIDES.
_STRIDES = {(1, 1): 8, (2, 1): 16, (2, 2): 32}


def split(obj):
    """(state dict, rest of the file) of a loaded mmseg checkpoint: ``{'meta', 'state_dict'}``."""
    return unwrap(obj, "state_dict")


def detect(keys):
    keys = set(keys or ())
    return f"{_HEAD}pam_in_conv.conv.weight" in keys and f"{_HEAD}pam.query_project.weight" in keys


def convert(raw, meta, path="", align_corners=None):
    """``align_corners``: None reads it from the checkpoint's config (else mmseg's default False); True/False
    overrides it (e.g. a 769x769 model saved without its config)."""
    raw = strip_prefix(raw)
    r = Renamer(raw, NAME, path)
    backbone, stem = torch_resnet(r, "backbone.")
    _head(r)
    r.drop_prefix("auxiliary_head.", "auxiliary FCN head on layer3: a training loss only, never used to predict")
    tensors, dropped = r.finish()
    file_meta = meta.get("meta") if isinstance(meta.get("meta"), dict) else {}
    settings, notes = _settings(_config_text(file_meta), align_corners, path)
    num_classes = int(raw[f"{_HEAD}conv_seg.weight"].shape[0])
    config = dict(arch(dict(settings, backbone=backbone, stem=stem, num_classes=num_classes)), input_norm="imagenet")
    return Imported(tensors, config, dropped, dict(source=NAME, **_labels(file_meta), notes=notes))


def _head(r):
    for src, dst in _CONV_BN:
        r.conv_bn(f"{_HEAD}{src}.conv", f"{_HEAD}{src}.bn", f"head.{dst}")
    for name in ("query", "key", "value"):
        _biased(r, f"{_HEAD}pam.{name}_project", f"head.pam.{name}")
    for branch in ("pam", "cam"):
        r.move(f"{_HEAD}{branch}.gamma.scale", f"head.{branch}.gamma", shape=(1,))  # mmcv Scale: a 0-d parameter
    for src, dst in _CLASSIFIERS:
        _biased(r, f"{_HEAD}{src}", f"head.{dst}")


def _biased(r, src, dst):
    """A conv that always has a bias here: a missing one is a truncated file, named by ``get``."""
    for param in ("weight", "bias"):
        r.move(f"{src}.{param}", f"{dst}.{param}")


def _config_text(file_meta):
    text = file_meta.get("config") or file_meta.get("cfg")
    return text if isinstance(text, str) else ""


def _settings(text, align_corners, path):
    found = settings_from_config(text, path)
    settings = dict(RELEASED, **found)
    notes = [f"{k}={v!r} read from the checkpoint's config" for k, v in found.items()]
    notes += [f"{k}={v!r}: mmseg's released DANet configs, not stated in the file" for k, v in RELEASED.items()
              if k not in found]
    if align_corners is not None:
        settings["align_corners"] = bool(align_corners)
        notes.append(f"align_corners={bool(align_corners)} given by the caller")
    return settings, notes


def settings_from_config(text, path=""):
    """What an mmseg config's text states about the model: ``align_corners`` of ``decode_head``, and the output
    stride, halved first dilation and multi-grid of ``backbone``. Absent blocks or keys are left out."""
    found = {}
    flag = _flag(_block(text, "decode_head"), "align_corners")
    if flag is not None:
        found["align_corners"] = flag
    backbone = _block(text, "backbone")
    if backbone:
        found.update(_backbone(backbone, path))
    return found


def _backbone(text, path):
    from danet.models.resnet import OUTPUT_STRIDES

    found = {"halve_first_dilation": bool(_flag(text, "contract_dilation"))}  # mmseg ResNet's default: False
    strides, dilations, grid = (_ints(text, key) for key in ("strides", "dilations", "multi_grid"))
    if strides:
        stride = _STRIDES.get(tuple(strides[2:]))
        wanted = stride and [d for _, d in OUTPUT_STRIDES[stride]]
        if stride is None or (dilations and list(dilations[2:]) != wanted):
            raise UserError(f"{path}: the mmseg config's backbone has strides {strides} and dilations {dilations}: "
                            "not output stride 8, 16 or 32 as this project builds it")
        found["output_stride"] = stride
    if grid:
        found.update(multi_grid=True, multi_dilation=grid)
    return found


def _block(text, name):
    """The inside of ``name=dict(...)`` in a config's text (first occurrence, parentheses balanced), or ''."""
    match = re.search(rf"\b{name}\s*=\s*dict\(", text)
    if match is None:
        return ""
    depth = 1
    for i in range(match.end(), len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[match.end():i]
    return ""


def _flag(text, key):
    match = re.search(rf"\b{key}\s*=\s*(True|False)\b", text)
    return None if match is None else match.group(1) == "True"


def _ints(text, key):
    match = re.search(rf"\b{key}\s*=\s*[(\[]([\d\s,]*)[)\]]", text)
    return [int(v) for v in match.group(1).replace(",", " ").split()] if match else None


def _labels(file_meta):
    """Class names and palette: 1.x ``dataset_meta`` first, else 0.x ``CLASSES`` / ``PALETTE``."""
    dataset = file_meta.get("dataset_meta") if isinstance(file_meta.get("dataset_meta"), dict) else {}
    classes = dataset.get("classes", file_meta.get("CLASSES"))
    palette = dataset.get("palette", file_meta.get("PALETTE"))
    out = {}
    if classes is not None:
        out["classes"] = [str(c) for c in classes]
    if palette is not None:
        out["palette"] = [[int(v) for v in colour] for colour in palette]
    return out
