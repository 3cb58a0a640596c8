"""DANet checkpoints of the torch implementations (mmseg, sssegmentation, the authors' code) imported exactly.

Tests marked ``partners`` read checkpoints made by the partners' own code (``tests/partners/make_*.py``) from
``$DANET_PARTNER_DIR`` and compare our logits with the partner's; they fail when the files are not there. The
others build the official DANet's state dict from our model through the inverse of the name map, so they run
anywhere and compare bit for bit.
"""
import os
import re

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from sourcelib import (
    BACKBONE_TO_OFFICIAL,
    BN,
    assert_imports_exactly,
    import_wrapped,
    load_imported,
    official_checkpoint,
    official_key,
)

from danet import build_model
from danet.engine.common import ARCH_KEYS, arch
from danet.errors import UserError
from danet.weights.pth import load_pth
from danet.weights.sources import SOURCES, mmseg, official, source_module, ssseg

# max |ours - theirs| / max |theirs|. The import is proved in float64 (both sides run the same weights in double
# precision): <= 1e-5 (measured ~7e-7: our attention computes its energies in float32). In float32 the bound is
# 1e-4: random ResNet-50 weights amplify rounding, so the partners' own float32 logits differ from their float64
# ones by up to 1.9e-5, and any two float32 implementations by ~3e-5. A wrong mapping is off by orders more
# (swapped branch classifiers ~1.5, the other align_corners ~0.25).
REL_TOL_64 = 1e-5
REL_TOL = 1e-4
ARGMAX_AGREEMENT = 0.999


# ---------------------------------------------------------------------------------------------- partner files

# (fixture name, source, convert options): ssseg's d8 and d16 files have the same tensors, and the fixture names
# carry no ssseg config name, so d16 needs the option and d8 tests the default.
PARTNER_CASES = [
    ("mmseg_r50_d8", mmseg, {}),
    ("mmseg_r50_d8_769", mmseg, {}),
    ("ssseg_r50_d8", ssseg, {}),
    ("ssseg_r50_d16", ssseg, {"output_stride": 16}),
]


class _Partner:
    """One fixture's files, read on first use inside a test (so a missing file fails the test, not its set-up)."""

    def __init__(self, name, source, options):
        self.name, self.source, self.options, self._loaded = name, source, options, None

    def load(self):
        if self._loaded is None:
            root = os.environ.get("DANET_PARTNER_DIR")
            if not root:
                pytest.fail("DANET_PARTNER_DIR is not set: make the partner fixtures with tests/partners/make_*.py "
                            "(see tests/partners/README.md) and point it to their folder", pytrace=False)
            pth, npz = (os.path.join(root, self.name + ext) for ext in (".pth", ".npz"))
            missing = [p for p in (pth, npz) if not os.path.isfile(p)]
            if missing:
                pytest.fail(f"partner fixture missing: {', '.join(missing)} (make it with tests/partners/"
                            f"make_{self.source.NAME}.py, see tests/partners/README.md)", pytrace=False)
            self._loaded = pth, load_pth(pth), dict(np.load(npz))
        return self._loaded


@pytest.fixture(scope="module", params=PARTNER_CASES, ids=[c[0] for c in PARTNER_CASES])
def partner(request):
    # module scope: pytest runs all tests of one fixture before the next, so each 200 MB file is read once
    return _Partner(*request.param)


def _rel(ours, theirs):
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def _resize(logits, size, config):
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=config["align_corners"],
                         align_mode=config["align_mode"])


def _detected_by(obj):
    """The registered sources whose split() and detect() accept the loaded file ``obj``, as read_foreign asks."""
    out = []
    for name in SOURCES:
        raw = source_module(name).split(obj)[0]
        if raw is not None and source_module(name).detect(list(raw)):
            out.append(name)
    return out


@pytest.mark.partners
def test_only_its_own_source_detects_a_partner_checkpoint(partner):
    _, obj, _ = partner.load()
    assert _detected_by(obj) == [partner.source.NAME]
    raw = list(partner.source.split(obj)[0])
    assert [name for name in SOURCES if source_module(name).detect(raw)] == [partner.source.NAME]


@pytest.mark.partners
def test_partner_checkpoint_gives_the_partners_logits(partner):
    path, obj, expected = partner.load()
    imported = partner.source.convert(*partner.source.split(obj), path=path, **partner.options)
    config = imported.config
    assert set(ARCH_KEYS) <= set(config) and config["input_norm"] == "imagenet"
    assert config["align_corners"] == bool(expected["align_corners"])
    assert config["output_stride"] == int(expected.get("output_stride", 8))
    model = load_imported(build_model(**arch(config)), imported)
    x = paddle.to_tensor(expected["input"])
    with paddle.no_grad():
        fused = model(x).numpy()
        branches = model.head(model.backbone(x)[-1])
        full = [_resize(b, x.shape[2:], config).numpy() for b in branches[1:]]
    theirs = expected["logits"]
    assert _rel(fused, theirs) <= REL_TOL
    assert (fused.argmax(1) == theirs.argmax(1)).mean() >= ARGMAX_AGREEMENT
    for ours, key in zip([b.numpy() for b in branches], ("fused_lowres", "pam_lowres", "cam_lowres")):
        assert _rel(ours, expected[key]) <= REL_TOL, key
    for ours, key in zip(full, ("logits_pam", "logits_cam")):
        assert _rel(ours, expected[key]) <= REL_TOL, key
    assert _rel(float64_logits(config, imported.tensors, expected["input"]), expected["logits64"]) <= REL_TOL_64


def float64_logits(config, tensors, image):
    """Fused logits of the imported weights with the whole model in float64, as the partner's ``logits64``."""
    paddle.set_default_dtype("float64")
    try:
        model = build_model(**arch(config))
    finally:
        paddle.set_default_dtype("float32")
    for name, value in model.state_dict().items():
        value.set_value(tensors[name].astype(value.numpy().dtype))  # the attention gammas stay float32
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(image.astype(np.float64))).numpy()


@pytest.mark.partners
def test_partner_metadata_and_dropped_tensors(partner):
    path, obj, _ = partner.load()
    imported = partner.source.convert(*partner.source.split(obj), path=path, **partner.options)
    assert imported.meta["source"] == partner.source.NAME and imported.meta["notes"]
    aux = "auxiliary_head." if partner.source is mmseg else "auxiliary_decoder."
    assert any(k.startswith(aux) for k in imported.dropped)
    if partner.source is mmseg:
        assert imported.meta["classes"][:2] == ["road", "sidewalk"] and len(imported.meta["classes"]) == 19
        assert imported.meta["palette"][0] == [128, 64, 128]
        assert any("read from the checkpoint's config" in n and "align_corners" in n for n in imported.meta["notes"])
    else:
        assert "optimizer" in imported.dropped


# ---------------------------------------------------------------- the official code, without partner files

# Names copied from junfu1115/DANet: encoding/models/sseg/danet.py (DANetHead), encoding/nn/da_att.py
# (PAM_Module, CAM_Module), encoding/models/backbone/resnet.py (ResNet under BaseNet's ``pretrained``).
OFFICIAL_NAMES = [
    "pretrained.bn1.running_mean", "pretrained.layer1.0.downsample.1.running_var", "pretrained.layer4.2.conv3.weight",
    "pretrained.layer3.5.bn2.num_batches_tracked", "head.conv5a.0.weight", "head.conv5c.1.running_mean",
    "head.conv51.0.weight", "head.conv52.1.bias", "head.sa.query_conv.weight", "head.sa.key_conv.bias",
    "head.sa.value_conv.weight", "head.sa.gamma", "head.sc.gamma", "head.conv6.1.weight", "head.conv7.1.bias",
    "head.conv8.1.weight",
]
OFFICIAL_STEMS = {
    "7x7": ["pretrained.conv1.weight"],
    "deep64": ["pretrained.conv1.0.weight", "pretrained.conv1.4.running_var", "pretrained.conv1.6.weight"],
}
_BRANCH = {"pam_in": "conv5a", "cam_in": "conv5c", "pam_out": "conv51", "cam_out": "conv52"}
_CLS = {"cls_fused": "conv8", "cls_pam": "conv6", "cls_cam": "conv7"}
_TO_OFFICIAL = BACKBONE_TO_OFFICIAL + [  # our structured name -> the official key (the inverse of official.convert)
    (r"head\.(\w+_(?:in|out))\.0\.weight", lambda m: f"head.{_BRANCH[m[1]]}.0.weight"),
    (r"head\.(\w+_(?:in|out))\.1\.(\w+)", lambda m: f"head.{_BRANCH[m[1]]}.1.{BN[m[2]]}"),
    (r"head\.pam\.(query|key|value)\.(weight|bias)", lambda m: f"head.sa.{m[1]}_conv.{m[2]}"),
    (r"head\.pam\.gamma", lambda m: "head.sa.gamma"),
    (r"head\.cam\.gamma", lambda m: "head.sc.gamma"),
    (r"head\.(cls_\w+)\.(weight|bias)", lambda m: f"head.{_CLS[m[1]]}.1.{m[2]}"),
]
OFFICIAL_CONFIG = dict(backbone="resnet50", num_classes=5, multi_grid=True, multi_dilation=[4, 8, 16],
                       output_stride=8, halve_first_dilation=True, align_corners=True)


def _official_key(name):
    return official_key(name, _TO_OFFICIAL)


@pytest.fixture(scope="module", params=["7x7", "deep64"])
def official_case(request):
    """(our reference model's logits, the input, the official state dict of the same weights, the stem)."""
    paddle.seed(0)
    x, logits, raw = official_checkpoint(build_model(stem=request.param, **OFFICIAL_CONFIG), _official_key)
    return logits, x, raw, request.param


def test_the_generated_state_dict_has_the_official_names(official_case):
    _, _, raw, stem = official_case
    missing = [k for k in OFFICIAL_NAMES + OFFICIAL_STEMS[stem] if k not in raw]
    assert not missing


def test_official_checkpoint_imports_bit_exactly(official_case):
    logits, x, raw, stem = official_case
    imported = import_wrapped(official, raw, "DANet50.pth.tar", best_pred=0.87)
    config = imported.config
    assert {k: config[k] for k in OFFICIAL_CONFIG} == OFFICIAL_CONFIG and config["stem"] == stem
    assert_imports_exactly(build_model(**arch(config)), imported, x, logits, "official")


def test_official_aux_layer_is_dropped_with_its_reason(official_case):
    raw = dict(official_case[2], **{"auxlayer.conv5.0.weight": np.zeros((256, 1024, 3, 3), "float32"),
                                    "auxlayer.conv5.4.bias": np.zeros(5, "float32")})
    imported = official.convert(raw, {})
    assert "training loss only" in imported.dropped["auxlayer.conv5.4.bias"]


@pytest.mark.parametrize("options, expected", [
    ({}, dict(output_stride=8, multi_grid=True, multi_dilation=[4, 8, 16])),
    ({"output_stride": 16}, dict(output_stride=16, multi_grid=False)),
    ({"multi_grid": False}, dict(output_stride=8, multi_grid=False)),
    ({"multi_dilation": (2, 4, 8)}, dict(output_stride=8, multi_grid=True, multi_dilation=[2, 4, 8])),
])
def test_official_options_override_the_released_settings(official_case, options, expected):
    imported = official.convert(official_case[2], {}, **options)
    assert {k: imported.config[k] for k in expected} == expected
    assert imported.config["align_corners"] is True


def test_an_unknown_tensor_is_refused_by_name(official_case):
    raw = dict(official_case[2], **{"head.extra.weight": np.zeros(3, "float32")})
    with pytest.raises(UserError, match=r"DANet101\.pth\.tar: .*head\.extra\.weight"):
        official.convert(raw, {}, path="DANet101.pth.tar")


@pytest.mark.parametrize("missing", ["head.sa.gamma", "pretrained.layer2.0.bn1.running_var", "head.conv6.1.bias"])
def test_a_truncated_state_dict_is_refused_by_name(official_case, missing):
    raw = {k: v for k, v in official_case[2].items() if k != missing}
    with pytest.raises(UserError, match=re.escape(missing)):
        official.convert(raw, {}, path="DANet101.pth.tar")


def test_a_missing_block_is_refused_as_an_unknown_depth(official_case):
    raw = {k: v for k, v in official_case[2].items() if not k.startswith("pretrained.layer3.5.")}
    with pytest.raises(UserError, match=r"DANet101\.pth\.tar: .*\[3, 4, 5, 3\]"):
        official.convert(raw, {}, path="DANet101.pth.tar")


def test_a_source_forced_on_another_layout_is_refused():
    raw = {k: np.zeros(1, "float32") for k in MMSEG_KEYS}
    with pytest.raises(UserError, match=r"x\.pth: no pretrained\.layer1-4 tensors: .*official source"):
        official.convert(raw, {}, path="x.pth")


# ------------------------------------------------------------------------- detection, layouts, settings

# A few keys of each layout, as in the partners' files (tests/partners/README.md) and the official source.
MMSEG_KEYS = ["backbone.stem.0.weight", "backbone.layer1.0.conv1.weight", "decode_head.pam_in_conv.conv.weight",
              "decode_head.pam.query_project.weight", "decode_head.pam.gamma.scale", "decode_head.conv_seg.weight",
              "auxiliary_head.conv_seg.weight"]
SSSEG_KEYS = ["backbone_net.stem.0.weight", "backbone_net.layer1.0.conv1.weight", "pam_in_conv.0.weight",
              "pam_net.query_project.weight", "pam_net.gamma.scale", "decoder_pamcam.1.weight",
              "auxiliary_decoder.4.weight"]


def test_each_source_detects_only_its_own_keys(official_case):
    layouts = {"mmseg": MMSEG_KEYS, "ssseg": SSSEG_KEYS, "official": list(official_case[2]),
               "official-dataparallel": ["module." + k for k in official_case[2]],
               "this project": list(build_model("resnet18", num_classes=3).state_dict())}
    for layout, keys in layouts.items():
        expected = [n for n in ("mmseg", "ssseg", "official") if layout.startswith(n)]
        assert [n for n in SOURCES if source_module(n).detect(keys)] == expected, layout
    wrapped = {"epoch": 1, "optimizer": {}, "best_pred": 0.5, "state_dict": dict(official_case[2])}
    assert _detected_by(wrapped) == ["official"]


def test_split_unwraps_each_layout_and_nothing_else():
    tensors = {"a.weight": np.zeros(2, "float32")}
    assert mmseg.split({"meta": {"CLASSES": ["x"]}, "state_dict": tensors}) == (tensors, {"meta": {"CLASSES": ["x"]}})
    assert ssseg.split({"cur_epoch": 3, "optimizer": {}, "model": tensors}) == (tensors, {"cur_epoch": 3,
                                                                                         "optimizer": {}})
    assert official.split({"epoch": 1, "state_dict": {"module.a.weight": tensors["a.weight"]}}) == (tensors,
                                                                                                    {"epoch": 1})
    assert mmseg.split(tensors) == (tensors, {})  # a bare state dict is its own
    assert mmseg.split({"cur_epoch": 3, "model": tensors}) == (None, {})  # another source's wrapper: not ours
    assert ssseg.split(["not", "a", "dict"]) == (None, {})
    assert not any(s.detect(None) for s in (mmseg, ssseg, official))


MMSEG_0X = """model = dict(
    type='EncoderDecoder',
    backbone=dict(
        type='ResNetV1c',
        depth=101,
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        contract_dilation=True),
    decode_head=dict(
        type='DAHead',
        num_classes=19,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(type='FCNHead', align_corners=False))
"""


@pytest.mark.parametrize("text, expected", [
    (MMSEG_0X, dict(align_corners=True, halve_first_dilation=True, output_stride=8)),
    (MMSEG_0X.replace("align_corners=True", "align_corners=False"), dict(align_corners=False,
                                                                         halve_first_dilation=True, output_stride=8)),
    (MMSEG_0X.replace("(1, 1, 2, 4)", "(1, 1, 1, 2)").replace("(1, 2, 1, 1)", "(1, 2, 2, 1)")
     .replace("contract_dilation=True),", "contract_dilation=True,\n        multi_grid=(1, 2, 4)),"),
     dict(align_corners=True, halve_first_dilation=True, output_stride=16, multi_grid=True, multi_dilation=[1, 2, 4])),
    ("model = dict(backbone=dict(\n    strides=(\n        1,\n        2,\n        1,\n        1,\n    ),\n"
     "    type='ResNetV1c'))", dict(halve_first_dilation=False, output_stride=8)),
    ("norm_cfg = dict(type='BN')", {}),
])
def test_mmseg_settings_are_read_from_the_config_text(text, expected):
    assert mmseg.settings_from_config(text) == expected


def test_mmseg_config_with_a_stride_this_project_cannot_build_is_refused():
    text = MMSEG_0X.replace("dilations=(1, 1, 2, 4)", "dilations=(1, 1, 2, 2)")
    with pytest.raises(UserError, match=r"r101\.pth: .*strides \[1, 2, 1, 1\] and dilations \[1, 1, 2, 2\]"):
        mmseg.settings_from_config(text, "r101.pth")


@pytest.mark.parametrize("path, stride", [
    ("danet_resnet50os16_cityscapes.pth", 16),
    ("/models/danet_resnet101os8_ade20k.pth", 8),
    ("work/danet_resnet101os16_voc/checkpoints-epoch-60.pth", 16),
    ("ssseg_r50_d16.pth", None),
    ("", None),
])
def test_ssseg_output_stride_from_the_config_name_in_the_path(path, stride):
    assert ssseg.stride_from_name(path) == stride
