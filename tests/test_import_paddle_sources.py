"""Importing the Paddle-based implementations' DANet weights: PaddleSeg 2.x and the seed port (Paddle 1.5/1.6).

The ``partners`` test compares with PaddleSeg's own logits on the fixture tests/partners/make_paddleseg.py
writes (directory in ``DANET_PARTNER_DIR``). The fast tests write PaddleSeg-named state dicts from this
project's model through an inverse name map written here independently of the converter (with literal
PaddleSeg names as a check that the names are theirs), and seed checkpoints in both 1.x layouts with the
writers of tests/paddle1_writers.py.
"""
import importlib
import os
import re

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle1_writers import lod_tensor_file, marked, seed_params, tnum_file, write

import danet
from danet.engine.common import arch
from danet.errors import UserError
from danet.weights.match import fit
from danet.weights.pdparams import safe_load
from danet.weights.sources import SOURCES, container, load_file, paddleseg, seed

PADDLESEG_MODEL = dict(stem="deep32", avg_down=True, halve_first_dilation=False, align_corners=False, align_mode=1)
# Literal keys of PaddleSeg 2.8.0's DANet ResNet50_vd state dict (read from the fixture file).
PADDLESEG_KEYS = ("backbone.conv1_1._conv.weight", "backbone.conv1_3._batch_norm._variance",
                  "backbone.bb_0_0.short._conv.weight", "backbone.bb_1_0.short._batch_norm._mean",
                  "backbone.bb_2_5.conv2._batch_norm.bias", "backbone.bb_3_2.conv1._conv.weight",
                  "head.position_conv._conv.bias", "head.conv2._batch_norm._mean", "head.pam.query_conv.weight",
                  "head.pam.gamma", "head.cam.gamma", "head.cls_head.1.bias", "head.aux_head_cam.1.weight",
                  "head.aux_head_pam.1.bias", "head.aux_head.1.weight")
PADDLESEG_COUNT = 315  # tensors in that file
# Keys of the other sources' files: the official repo's (its danet.py: DANetHead conv5a, sa, sc, conv6-8; backbone
# 'pretrained'), and mmseg's and sssegmentation's as their partner fixtures hold them; this project's own.
OTHER_KEYS = {
    "official": ["pretrained.conv1.0.weight", "pretrained.layer1.0.conv1.weight", "head.conv5a.0.weight",
                 "head.sa.query_conv.weight", "head.sa.gamma", "head.sc.gamma", "head.conv8.1.weight"],
    "mmseg": ["backbone.stem.0.weight", "backbone.layer1.0.conv1.weight", "decode_head.pam_in_conv.conv.weight",
              "decode_head.pam.query_project.weight", "decode_head.pam.gamma.scale", "decode_head.conv_seg.weight"],
    "ssseg": ["backbone_net.stem.0.weight", "pam_in_conv.0.weight", "pam_net.query_project.weight",
              "pam_net.gamma.scale", "cam_net.gamma.scale", "decoder_pamcam.1.weight"],
    "ours": ["backbone.conv1.0.weight", "head.pam_in.0.weight", "head.pam.gamma", "head.cam.gamma",
             "head.cls_fused.weight"],
}


def available_sources():
    """The source modules present (others may be written later), by name."""
    found = {}
    for name in SOURCES:
        try:
            found[name] = importlib.import_module(f"danet.weights.sources.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"danet.weights.sources.{name}":
                raise
    return found


def detecting(keys):
    return [name for name, module in available_sources().items() if module.detect(list(keys))]


def load_strictly(imported):
    """The model ``imported.config`` describes, with the tensors loaded: they must cover it exactly."""
    model = danet.build_model(**arch(imported.config))
    state = model.state_dict()
    fit({k: v.shape for k, v in state.items()}, imported.tensors, "imported")
    model.set_state_dict(imported.tensors)
    model.eval()
    return model


# ---------------------------------------------------------------------------------------- PaddleSeg: its real logits


def partner_files(stem):
    folder = os.environ.get("DANET_PARTNER_DIR")
    if not folder:
        pytest.fail("DANET_PARTNER_DIR is not set: point it at the folder tests/partners/make_paddleseg.py wrote "
                    "(see tests/partners/README.md)", pytrace=False)
    paths = [os.path.join(folder, f"{stem}.{ext}") for ext in ("pdparams", "npz")]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run .venv-paddle26/bin/python tests/partners/make_paddleseg.py "
                    f"{folder}", pytrace=False)
    return paths


def rel_diff(ours, theirs):
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.partners
def test_paddleseg_checkpoint_gives_paddleseg_logits():
    weights, outputs = partner_files("paddleseg_r50_os8")
    raw, ref = safe_load(weights), np.load(outputs)
    assert detecting(raw) == ["paddleseg"]
    imported = paddleseg.convert(*paddleseg.split(raw), path=weights)
    config = imported.config
    assert config["input_norm"] == "half" and np.allclose(ref["mean"], 127.5) and np.allclose(ref["std"], 127.5)
    assert (config["align_corners"], config["align_mode"]) == (ref["align_corners"], ref["align_mode"])
    assert sorted(imported.dropped) == ["head.aux_head.1.bias", "head.aux_head.1.weight", "head.aux_head_pam.1.bias",
                                        "head.aux_head_pam.1.weight"]
    model = load_strictly(imported)
    x = paddle.to_tensor(ref["input"])
    with paddle.no_grad():
        fused = model(x).numpy()
        _, pam, cam = model.head(model.backbone(x)[3])
    assert rel_diff(fused, ref["logits"]) <= 1e-5
    assert (fused.argmax(1) == ref["logits"].argmax(1)).mean() >= 0.999
    # The branches: PaddleSeg scores its PAM features with aux_head_cam, and so does the imported cls_pam.
    for ours, theirs in ((pam, ref["logits_pam_paddleseg"]), (cam, ref["logits_cam"])):
        up = F.interpolate(ours, size=x.shape[2:], mode="bilinear", align_corners=False, align_mode=1).numpy()
        assert rel_diff(up, theirs) <= 1e-5


# ---------------------------------------------------------------------------------------- PaddleSeg: names, fast

# Our name -> PaddleSeg's, written from their source (resnet_vd.py, danet.py), not from the converter.
CONV_BN_RULES = (
    (r"backbone\.stem\.(\d)\.", lambda m: f"backbone.conv1_{int(m[1]) + 1}."),
    (r"backbone\.layer(\d)\.(\d+)\.conv(\d)\.", lambda m: f"backbone.bb_{int(m[1]) - 1}_{m[2]}.conv{int(m[3]) - 1}."),
    (r"backbone\.layer(\d)\.(\d+)\.downsample\.", lambda m: f"backbone.bb_{int(m[1]) - 1}_{m[2]}.short."),
    (r"head\.(pam_in|cam_in|pam_out|cam_out)\.", lambda m: "head.{}.".format(
        {"pam_in": "position_conv", "cam_in": "channel_conv", "pam_out": "conv2", "cam_out": "conv1"}[m[1]])),
)
PLAIN_RULES = (
    (r"head\.pam\.(query|key|value)\.", lambda m: f"head.pam.{m[1]}_conv."),
    (r"head\.cls_fused\.", lambda m: "head.cls_head.1."),
    (r"head\.cls_(pam|cam)\.", lambda m: "head.aux_head_cam.1."),
)


def paddleseg_name(key):
    for pattern, prefix in CONV_BN_RULES:
        if m := re.match(pattern, key):
            rest = key[m.end():]
            return prefix(m) + ("_conv." + rest[2:] if rest.startswith("0.") else "_batch_norm." + rest[2:])
    for pattern, prefix in PLAIN_RULES:
        if m := re.match(pattern, key):
            return prefix(m) + key[m.end():]
    return key  # head.pam.gamma, head.cam.gamma


def randomised(model, rng):
    """Random BN statistics and affines, non-zero attention gammas, PaddleSeg's one branch classifier for both."""
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    for key, value in state.items():
        if value.ndim == 1 and key.endswith(("_variance", ".weight")) and "gamma" not in key:
            state[key] = rng.uniform(0.5, 1.5, value.shape).astype("float32")
        elif value.ndim == 1 and "gamma" not in key:
            state[key] = rng.normal(0, 0.1, value.shape).astype("float32")
    state["head.pam.gamma"], state["head.cam.gamma"] = np.float32([0.7]), np.float32([0.4])
    state["head.cls_pam.weight"], state["head.cls_pam.bias"] = state["head.cls_cam.weight"], state["head.cls_cam.bias"]
    model.set_state_dict(state)
    return state


def paddleseg_file(state, rng, num_classes):
    """A PaddleSeg DANet state dict holding ``state``, plus conv biases on the head's ConvBNReLUs and the two
    classifiers PaddleSeg has and we do not."""
    raw = {paddleseg_name(k): v for k, v in state.items()}
    for conv in ("position_conv", "channel_conv", "conv1", "conv2"):
        raw[f"head.{conv}._conv.bias"] = rng.normal(0, 0.5, [512]).astype("float32")
    raw["head.aux_head.1.weight"] = rng.normal(0, 0.1, [num_classes, 2048, 1, 1]).astype("float32")
    raw["head.aux_head_pam.1.weight"] = rng.normal(0, 0.1, [num_classes, 512, 1, 1]).astype("float32")
    for head in ("aux_head", "aux_head_pam"):
        raw[f"head.{head}.1.bias"] = rng.normal(0, 0.1, [num_classes]).astype("float32")
    return raw


@pytest.mark.heavy
def test_paddleseg_names_convert_and_load_bit_exactly():
    rng = np.random.default_rng(0)
    model = danet.build_model("resnet50", num_classes=7, **PADDLESEG_MODEL)
    state = randomised(model, rng)
    raw = paddleseg_file(state, rng, 7)
    assert set(PADDLESEG_KEYS) <= set(raw) and len(raw) == PADDLESEG_COUNT
    assert detecting(raw) == ["paddleseg"]
    imported = paddleseg.convert(*paddleseg.split(raw))
    assert imported.config == arch(dict(backbone="resnet50", num_classes=7, input_norm="half", **PADDLESEG_MODEL))
    assert imported.meta["source"] == "paddleseg"
    np.testing.assert_array_equal(imported.tensors["head.pam_out.0.weight"], raw["head.conv2._conv.weight"])
    np.testing.assert_array_equal(imported.tensors["head.cam_out.0.weight"], raw["head.conv1._conv.weight"])
    # PaddleSeg computes BN(conv(x) + b) with mean m: our bias-free conv needs mean m - b, shifted here by hand.
    for ours, theirs in (("pam_in", "position_conv"), ("cam_in", "channel_conv"), ("pam_out", "conv2"),
                         ("cam_out", "conv1")):
        state[f"head.{ours}.1._mean"] = state[f"head.{ours}.1._mean"] - raw[f"head.{theirs}._conv.bias"]
    model.set_state_dict(state)
    model.eval()
    imported_model = load_strictly(imported)
    for key, value in imported_model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key], err_msg=key)
    x = paddle.to_tensor(np.random.default_rng(1).normal(size=(1, 3, 45, 61)).astype("float32"))
    with paddle.no_grad():
        want, got = model(x).numpy(), imported_model(x).numpy()
    assert np.isfinite(want).all() and want.std() > 0
    np.testing.assert_array_equal(got, want)


def test_paddleseg_options_and_refusals():
    rng = np.random.default_rng(2)
    raw = paddleseg_file(randomised(danet.build_model("resnet50", **PADDLESEG_MODEL), rng), rng, 19)
    config = paddleseg.convert(raw, {}, output_stride=16, align_corners=True).config
    assert (config["output_stride"], config["align_corners"], config["align_mode"]) == (16, True, 0)
    assert paddleseg.convert(raw, {}, stem="deep32", num_classes=19).config["stem"] == "deep32"  # repeating is fine
    with pytest.raises(UserError, match="stem='deep32'"):
        paddleseg.convert(raw, {}, "p.pdparams", stem="7x7")
    with pytest.raises(UserError, match="unknown option"):
        paddleseg.convert(raw, {}, "p.pdparams", crop_size=769)
    with pytest.raises(UserError, match="head.extra._conv.weight"):
        paddleseg.convert(dict(raw, **{"head.extra._conv.weight": np.zeros(1, "float32")}), {}, "p.pdparams")
    lacking = {k: v for k, v in raw.items() if k != "head.conv1._batch_norm._variance"}
    with pytest.raises(UserError, match=r"p\.pdparams.*lacks head\.conv1\._batch_norm\._variance"):
        paddleseg.convert(lacking, {}, "p.pdparams")
    truncated = {k: v for k, v in raw.items() if not k.startswith("backbone.bb_2_5.")}
    with pytest.raises(UserError, match=r"p\.pdparams: .*blocks per stage"):
        paddleseg.convert(truncated, {}, "p.pdparams")
    assert paddleseg.split([1, 2]) == (None, {})


# ---------------------------------------------------------------------------------------- the seed, fast

OPTIMIZER = {"layer3.1/Conv2D_1.weight_velocity_0": np.zeros(1, "float32"),
             "@LR_DECAY_COUNTER@": np.zeros(1, "int64"), "global_step": np.zeros(1, "int32")}


def seed_checkpoint(tmp_path, layout):
    """A seed ResNet-50 DANet written by Paddle 1.6's save_dygraph (TNUM) or 1.5.2's per-variable save."""
    raw = dict(marked(seed_params(50)), **OPTIMIZER)
    if layout == "tnum":
        return write(tmp_path / "DANet50.pdparams", tnum_file(raw))
    for name, array in raw.items():
        write(tmp_path / "DANet50" / name, lod_tensor_file(array))
    return str(tmp_path / "DANet50")


@pytest.mark.parametrize("layout", ["tnum", "folder"])
def test_seed_layouts_detect_convert_and_load(tmp_path, layout):
    path = seed_checkpoint(tmp_path, layout)
    assert container(path) == {"tnum": "paddle1-tnum", "folder": "paddle1-folder"}[layout]
    obj = load_file(path)
    assert detecting(obj) == ["seed"]
    imported = seed.convert(*seed.split(obj), path=path)
    assert imported.config == arch(dict(backbone="resnet50", num_classes=19, multi_grid=True, input_norm="imagenet"))
    assert imported.config["stem"] == "7x7" and imported.config["align_corners"] is True
    assert sorted(imported.dropped) == sorted(OPTIMIZER) and imported.meta["source"] == "seed"
    model = load_strictly(imported)
    state = model.state_dict()
    for i, (_, _, ours) in enumerate(seed_params(50)):
        assert state[ours].numpy().flat[0] == i + 1, ours  # each tensor landed in its own place


def test_seed_refusals_name_the_file(tmp_path):
    raw = marked(seed_params(50))
    with pytest.raises(UserError, match=r"ckpt: .*resnet50/FC_0\.w_0"):
        seed.convert(dict(raw, **{"resnet50/FC_0.w_0": np.zeros(2, "float32")}), {}, "ckpt")
    lacking = {k: v for k, v in raw.items() if k != "pam/Conv2D_2.bias"}
    with pytest.raises(UserError, match=r"ckpt: seed layer pam/Conv2D_2 has \['weight'\]"):
        seed.convert(lacking, {}, "ckpt")
    with pytest.raises(UserError, match="avg_down"):
        seed.convert(raw, {}, "ckpt", avg_down=True)
    assert seed.convert(raw, {}, multi_grid=False, backbone="resnet50").config["multi_grid"] is False


def test_detect_says_no_to_the_others_keys():
    seed_keys = [name for name, _, _ in seed_params(50)]
    paddleseg_keys = [paddleseg_name(k) for k in danet.build_model("resnet50", **PADDLESEG_MODEL).state_dict()]
    for keys in [seed_keys, *OTHER_KEYS.values()]:
        assert not paddleseg.detect(keys)
    for keys in [paddleseg_keys, list(PADDLESEG_KEYS), *OTHER_KEYS.values()]:
        assert not seed.detect(keys)
    assert paddleseg.detect(paddleseg_keys) and seed.detect(seed_keys)
