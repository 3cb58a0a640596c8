"""DRANet (danet.models.dranet) and the import of the authors' checkpoints (danet.weights.sources.dran).

The model: output shapes at odd sizes, every parameter trained, static Program = dygraph, PyTorch's adaptive
pooling bins, the released model's parameter count. The import: a state dict under the official names (made
from our model through the inverse of the name map) gives our logits bit for bit, and an independent float64
numpy forward of the official head (written from junfu1115/DANet ``dran.py`` / ``dran_att.py`` on those
official tensors, Linear weights in PyTorch's [out, in] layout) gives the imported model's logits.
"""
import inspect
import re

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from numpy.testing import assert_allclose
from sourcelib import (
    BACKBONE_TO_OFFICIAL,
    BN,
    assert_imports_exactly,
    import_wrapped,
    official_checkpoint,
    official_key,
)
from tracelib import as_list, trace_and_run

from danet import build_model
from danet.engine.common import ARCH_KEYS
from danet.engine.static import static_mode  # dygraph again after the block
from danet.errors import UserError
from danet.models.danet import DANet
from danet.models.dranet import DRANet
from danet.weights.sources import SOURCES, dran, source_module

C = 5  # classes of the small test models
H, W = 65, 97  # odd: stride-8 features are 9x13, and no bin size (2, 3, 6) divides them
SCALES = ("head.cpam.scale", "head.ccam.scale")


def _image(b=2, h=H, w=W, seed=0):
    return np.random.default_rng(seed).normal(size=(b, 3, h, w)).astype(np.float32)


def _build(scale=0.5, **options):
    """A small DRANet whose attention scales are non-zero (fresh ones are 0: the attention would be skipped)."""
    model = DRANet(C, options.pop("backbone", "resnet18"), **options)
    for name, param in model.named_parameters():
        if name in SCALES:
            param.set_value(np.full([1], scale, np.float32))
    return model


# ------------------------------------------------------------------------------------------------ the model

def test_the_constructor_takes_danets_keyword_arguments():
    ours, theirs = (inspect.signature(cls.__init__).parameters for cls in (DRANet, DANet))
    assert [(p.name, p.default) for p in ours.values()] == [(p.name, p.default) for p in theirs.values()]


@pytest.mark.parametrize("aux", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_outputs_have_the_input_size(aux, training):
    model = _build(aux_head=aux, aux_channels=8)
    model.train() if training else model.eval()
    with paddle.no_grad():
        out = model(paddle.to_tensor(_image()))
    if not training:  # eval: the main logits only, never the auxiliary ones
        assert isinstance(out, paddle.Tensor) and list(out.shape) == [2, C, H, W]
        return
    assert [list(o.shape) for o in out] == [[2, C, H, W]] * (2 if aux else 1)
    assert model.output_names == (("main", "aux") if aux else ("main",))
    assert model.loss_weights(0.2) == ((1.0, 0.2) if aux else (1.0,))


def test_the_auxiliary_head_runs_only_in_training():
    model = _build(aux_head=True, aux_channels=8)
    calls = []
    model.aux_head.register_forward_pre_hook(lambda layer, inputs: calls.append(inputs[0].shape))
    with paddle.no_grad():
        model.eval()
        model(paddle.to_tensor(_image(1)))
        assert calls == []
        model.train()
        model(paddle.to_tensor(_image(1)))
    assert calls == [[1, 256, 9, 13]]  # layer3's output (ResNet-18: 256 channels) at stride 8


def _gradients(model):
    model.train()
    model.clear_gradients()
    label = paddle.to_tensor(np.random.default_rng(1).integers(0, C, size=(2, 1, H, W)))
    outputs = model(paddle.to_tensor(_image()))
    paddle.add_n([F.cross_entropy(o, label, axis=1) for o in outputs]).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if not p.stop_gradient}
    return {n: 0.0 if g is None else float(g.abs().max()) for n, g in grads.items()}


def test_every_parameter_receives_a_gradient_and_the_head_learning_rate():
    model = _build(aux_head=True, aux_channels=8, head_lr_mult=10.0)
    grads = _gradients(model)
    assert not [n for n, g in grads.items() if g == 0.0]
    assert {"head.cls.weight", "aux_head.cls.bias", "head.decoder.gamma", *SCALES} <= set(grads)
    rates = {n: p.optimize_attr["learning_rate"] for n, p in model.named_parameters() if not p.stop_gradient}
    assert {r for n, r in rates.items() if n.startswith("backbone.")} == {1.0}
    assert {r for n, r in rates.items() if not n.startswith("backbone.")} == {10.0}  # classifiers included


def test_fresh_scales_leave_the_attention_layers_without_gradient_on_the_first_step():
    """As in the official code (scale = 0): the first step moves only the scales, then the layers behind them."""
    grads = _gradients(_build(scale=0.0))
    blocked = [n for n in grads if n.startswith(("head.cpam.", "head.ccam.")) and n not in SCALES]
    assert blocked and all(grads[n] == 0.0 for n in blocked)
    assert all(grads[n] > 0.0 for n in SCALES)
    assert all(g > 0.0 for n, g in grads.items() if n not in blocked)


@pytest.mark.parametrize("training", [False, True])
def test_static_program_gives_the_dygraph_outputs(training):
    """Eval logits; train mode with the auxiliary head (dropout off, batch statistics)."""
    options = dict(aux_head=True, aux_channels=8, stem="deep64", dropout=0.0)
    model = _build(scale=0.3, **options)
    state = {k: v.numpy() for k, v in model.state_dict().items()}  # before train mode moves the BN statistics
    images = [_image(1, H, W, seed=6), _image(2, 40, 53, seed=7)]
    model.train() if training else model.eval()
    with paddle.no_grad():
        want = [[o.numpy() for o in as_list(model(paddle.to_tensor(x)))] for x in images]
    got = trace_and_run(lambda: DRANet(C, "resnet18", **options), state, images, training)
    for g, w in zip(got, want):
        assert len(g) == len(w) == (2 if training else 1)
        for go, wo in zip(g, w):
            assert_allclose(go, wo, rtol=0, atol=2e-5)


def _pool(x, bins):
    """PyTorch's AdaptiveAvgPool2d: bin i covers [floor(i * size / bins), ceil((i + 1) * size / bins))."""
    def edges(size):
        return [(i * size // bins, -(-(i + 1) * size // bins)) for i in range(bins)]

    return np.stack([np.stack([x[:, :, h0:h1, w0:w1].mean(axis=(2, 3)) for w0, w1 in edges(x.shape[3])], -1)
                     for h0, h1 in edges(x.shape[2])], -2)


POOL_SIZES = [(7, 11), (9, 13), (5, 4), (2, 3), (13, 1)]  # none divisible by 2, 3 and 6; some smaller than 6


def test_adaptive_pooling_uses_pytorchs_bins_in_dygraph_and_in_a_program():
    inputs = [np.random.default_rng(i).normal(size=(2, 3, h, w)).astype(np.float32)
              for i, (h, w) in enumerate(POOL_SIZES)]
    want = [[_pool(x.astype(np.float64), bins) for bins in (1, 2, 3, 6)] for x in inputs]
    dygraph = [[F.adaptive_avg_pool2d(paddle.to_tensor(x), bins).numpy() for bins in (1, 2, 3, 6)] for x in inputs]
    with static_mode():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [None, 3, None, None], "float32")
            pooled = [F.adaptive_avg_pool2d(x, bins) for bins in (1, 2, 3, 6)]
        exe = paddle.static.Executor(paddle.CPUPlace())
        static = [exe.run(main, feed={"x": x}, fetch_list=pooled) for x in inputs]
    for w, d, s in zip(want, dygraph, static):
        for wb, db, sb in zip(w, d, s):
            assert_allclose(db, wb, rtol=0, atol=1e-6)
            assert_allclose(sb, wb, rtol=0, atol=1e-6)


def test_config_rebuilds_the_same_model():
    with paddle.LazyGuard():
        model = DRANet(C, "resnet50", stem="deep64", multi_grid=True, aux_head=True)
        again = build_model(**model.config)
    assert type(again) is DRANet and again.config == model.config and model.config["model"] == "dranet"
    assert set(ARCH_KEYS) <= set(model.config)
    shapes = [[(k, v.shape) for k, v in m.state_dict().items()] for m in (model, again)]
    assert shapes[0] == shapes[1]


def test_the_released_models_size():
    """ResNet-101, deep stem, 19 classes, aux head: the official Dran's 735 tensors and 73,741,962 parameters."""
    with paddle.LazyGuard():
        model = DRANet(19, "resnet101", multi_grid=True, stem="deep64", aux_head=True)
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    assert sum(int(np.prod(p.shape)) for p in trainable) == 73_741_962
    official = _official_names(model.state_dict())
    assert len(official) == 735 and len(trainable) == 375


# ------------------------------------------------------------------------------- the official checkpoints

# Names copied from junfu1115/DANet encoding/models/sseg/dran.py (Dran, DranHead), encoding/nn/dran_att.py
# (CPAMEnc, CPAMDec, CCAMDec, CLGD) and encoding/models/backbone/resnet.py (deep stem), under BaseNet's pretrained.
OFFICIAL_NAMES = [
    "pretrained.conv1.0.weight", "pretrained.conv1.1.running_mean", "pretrained.conv1.4.weight",
    "pretrained.conv1.6.weight", "pretrained.bn1.running_var", "pretrained.layer1.0.downsample.0.weight",
    "pretrained.layer4.2.bn3.num_batches_tracked", "head.conv_cpam_b.0.weight", "head.cpam_enc.conv1.0.weight",
    "head.cpam_enc.conv4.1.running_var", "head.cpam_dec.scale", "head.cpam_dec.conv_query.weight",
    "head.cpam_dec.conv_query.bias", "head.cpam_dec.conv_key.weight", "head.cpam_dec.conv_value.bias",
    "head.conv_cpam_e.1.weight", "head.conv_ccam_b.0.weight", "head.ccam_enc.0.weight", "head.ccam_enc.1.bias",
    "head.ccam_dec.scale", "head.conv_ccam_e.0.weight", "head.conv_cat.1.running_mean", "head.clgd.gamma",
    "head.clgd.conv_low.0.weight", "head.clgd.conv_cat.0.weight", "head.clgd.conv_att.0.weight",
    "head.clgd.conv_att.0.bias", "head.clgd.conv_out.1.weight", "cls_seg.1.weight", "cls_seg.1.bias",
    "cls_aux.0.weight", "cls_aux.1.running_var", "cls_aux.4.weight", "cls_aux.4.bias",
]
_CONV_BN = {"head.cpam_in": "head.conv_cpam_b", "head.cpam_out": "head.conv_cpam_e", "head.ccam_in": "head.conv_ccam_b",
            "head.ccam.reduce": "head.ccam_enc", "head.ccam_out": "head.conv_ccam_e", "head.fuse": "head.conv_cat",
            "head.decoder.low": "head.clgd.conv_low", "head.decoder.fuse": "head.clgd.conv_cat",
            "head.decoder.out": "head.clgd.conv_out", "aux_head.conv": "cls_aux",
            **{f"head.cpam.centers.{i}": f"head.cpam_enc.conv{i + 1}" for i in range(4)}}
_LAYERS = {"head.cpam.query": "head.cpam_dec.conv_query", "head.cpam.key": "head.cpam_dec.conv_key",
           "head.cpam.value": "head.cpam_dec.conv_value", "head.decoder.gate": "head.clgd.conv_att.0",
           "head.cls": "cls_seg.1", "aux_head.cls": "cls_aux.4", "head.cpam": "head.cpam_dec",
           "head.ccam": "head.ccam_dec", "head.decoder": "head.clgd"}  # (the last three: scale, scale, gamma)
TRANSPOSED = ("head.cpam_dec.conv_key.weight", "head.cpam_dec.conv_value.weight")  # nn.Linear: [out, in] in torch


def _official_key(name):
    prefix, leaf = name.rsplit(".", 1)
    if prefix in _LAYERS:
        return f"{_LAYERS[prefix]}.{leaf}"
    conv_bn = re.fullmatch(r"(.+)\.([01])", prefix)
    if conv_bn and conv_bn[1] in _CONV_BN:
        return f"{_CONV_BN[conv_bn[1]]}.{conv_bn[2]}.{leaf if conv_bn[2] == '0' else BN[leaf]}"
    return official_key(name, BACKBONE_TO_OFFICIAL)  # the inverse of dran.convert's torch_resnet


def _official_names(state):
    """Our state dict's keys under the official names, plus the step counter every torch BN carries."""
    names = [_official_key(k) for k in state]
    return names + [k.replace("running_var", "num_batches_tracked") for k in names if k.endswith("running_var")]


@pytest.fixture(scope="module")
def official_case():
    """(our model in eval mode, the input, its logits, the official state dict of the same weights): the released
    architecture (deep stem, multi-grid, aux) on ResNet-50, so every head tensor has the official shape. The input
    is 41x35: c1 11x9, c4 6x5, so the pooling bins overlap."""
    paddle.seed(0)
    model = DRANet(C, "resnet50", multi_grid=True, stem="deep64", aux_head=True)
    return (model, *official_checkpoint(model, _official_key, TRANSPOSED))


def test_the_generated_state_dict_has_the_official_names_and_shapes(official_case):
    raw = official_case[3]
    assert not [k for k in OFFICIAL_NAMES if k not in raw]
    assert raw["head.cpam_dec.conv_key.weight"].shape == (128, 512)  # Linear(512, 128).weight in torch
    assert raw["head.clgd.conv_att.0.weight"].shape == (1, 288, 1, 1)  # cat[32 low, 256 high] -> 1
    assert raw["cls_seg.1.weight"].shape == (C, 256, 1, 1)
    assert raw["cls_aux.0.weight"].shape == (256, 1024, 3, 3) and raw["head.ccam_enc.0.weight"].shape == (32, 512, 1, 1)


def test_official_checkpoint_imports_bit_exactly(official_case):
    _, x, logits, raw = official_case
    imported = import_wrapped(dran, raw, "dran50.pth.tar", best_pred=0.81)
    config = imported.config
    assert config["model"] == "dranet"
    assert {k: config[k] for k in ("backbone", "stem", "multi_grid", "multi_dilation", "output_stride",
                                   "aux_head", "aux_channels", "align_corners", "num_classes")} == dict(
        backbone="resnet50", stem="deep64", multi_grid=True, multi_dilation=[4, 8, 16], output_stride=8,
        aux_head=True, aux_channels=256, align_corners=True, num_classes=C)
    model = build_model(**config)  # the config's "model" picks DRANet
    assert type(model) is DRANet
    assert_imports_exactly(model, imported, x, logits, "dran")


def test_a_checkpoint_without_cls_aux_builds_no_aux_head(official_case):
    raw = {k: v for k, v in official_case[3].items() if not k.startswith("cls_aux.")}
    imported = dran.convert(raw, {})
    assert imported.config["aux_head"] is False and not any(k.startswith("aux_head.") for k in imported.tensors)


# An independent forward of the official head in float64 numpy, on the official tensors (torch layouts).

def _conv(x, w, b=None):
    """Stride-1 'same' convolution: x [B, Ci, h, w], w [Co, Ci, k, k] -> [B, Co, h, w]."""
    k, (h, wd) = w.shape[-1], x.shape[2:]
    xp = np.pad(x, [(0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)])
    out = sum(np.tensordot(xp[:, :, i:i + h, j:j + wd], w[:, :, i, j], axes=([1], [1]))
              for i in range(k) for j in range(k)).transpose(0, 3, 1, 2)
    return out if b is None else out + b[None, :, None, None]


def _cbr(sd, name, x):
    """Sequential(Conv2d(bias=False), BatchNorm2d (eval), ReLU)."""
    y = _conv(x, sd[f"{name}.0.weight"])
    stat = {s: sd[f"{name}.1.{s}"][None, :, None, None] for s in ("weight", "bias", "running_mean", "running_var")}
    y = (y - stat["running_mean"]) / np.sqrt(stat["running_var"] + 1e-5) * stat["weight"] + stat["bias"]
    return np.maximum(y, 0.0)


def _softmax(e):
    e = np.exp(e - e.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _linear(sd, name, y):
    return y @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]  # torch.nn.Linear


def _resize(x, h, w):
    """Bilinear with align_corners=True."""
    def taps(n_in, n_out):
        src = np.arange(n_out) * (n_in - 1) / max(n_out - 1, 1)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    (y0, y1, wy), (x0, x1, wx) = taps(x.shape[2], h), taps(x.shape[3], w)
    rows = x[:, :, y0] * (1 - wy)[:, None] + x[:, :, y1] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def _official_logits(sd, c1, c4):
    """DranHead.forward, then cls_seg (dran.py), with CPAMEnc / CPAMDec / CCAMDec / CLGD of dran_att.py."""
    b, c, h, w = c4.shape[0], c4.shape[1] // 4, c4.shape[2], c4.shape[3]
    ccam_b = _cbr(sd, "head.conv_ccam_b", c4)
    y = _cbr(sd, "head.ccam_enc", ccam_b).reshape(b, -1, h * w)                                 # B, C/16, N
    energy = ccam_b.reshape(b, c, -1) @ y.transpose(0, 2, 1)
    ccam = ccam_b + sd["head.ccam_dec.scale"] * (_softmax(energy.max(-1, keepdims=True) - energy) @ y).reshape(
        ccam_b.shape)
    cpam_b = _cbr(sd, "head.conv_cpam_b", c4)
    centers = np.concatenate([_cbr(sd, f"head.cpam_enc.conv{i}", _pool(cpam_b, n)).reshape(b, c, -1)
                              for i, n in enumerate((1, 2, 3, 6), 1)], 2).transpose(0, 2, 1)  # B, K, C
    query = _conv(cpam_b, sd["head.cpam_dec.conv_query.weight"], sd["head.cpam_dec.conv_query.bias"])
    attn = _softmax(query.reshape(b, -1, h * w).transpose(0, 2, 1)
                    @ _linear(sd, "head.cpam_dec.conv_key", centers).transpose(0, 2, 1))        # B, N, K
    value = _linear(sd, "head.cpam_dec.conv_value", centers).transpose(0, 2, 1)                 # B, C, K
    cpam = sd["head.cpam_dec.scale"] * (value @ attn.transpose(0, 2, 1)).reshape(cpam_b.shape) + cpam_b
    ccam, cpam = _cbr(sd, "head.conv_ccam_e", ccam), _cbr(sd, "head.conv_cpam_e", cpam)
    high = _cbr(sd, "head.conv_cat", np.concatenate([cpam, ccam], 1))
    low = _cbr(sd, "head.clgd.conv_low", c1)
    high = _resize(high, *low.shape[2:])
    gate = 1 / (1 + np.exp(-_conv(np.concatenate([low, high], 1), sd["head.clgd.conv_att.0.weight"],
                                  sd["head.clgd.conv_att.0.bias"])))
    fused = _cbr(sd, "head.clgd.conv_cat", np.concatenate([sd["head.clgd.gamma"] * gate * low, high], 1))
    return _conv(_cbr(sd, "head.clgd.conv_out", fused), sd["cls_seg.1.weight"], sd["cls_seg.1.bias"])


def test_the_imported_model_computes_the_official_head(official_case):
    model, x, logits, raw = official_case
    sd = {k: v.astype(np.float64) for k, v in raw.items()}
    with paddle.no_grad():
        c1, _, c3, c4 = model.backbone(paddle.to_tensor(x))
        aux = model.aux_head(c3).numpy()
    want = _official_logits(sd, c1.numpy().astype(np.float64), c4.numpy().astype(np.float64))
    want = _resize(want, *x.shape[2:])
    assert np.abs(logits - want).max() / np.abs(want).max() < 1e-5  # float32 vs float64
    want_aux = _conv(_cbr(sd, "cls_aux", c3.numpy().astype(np.float64)), sd["cls_aux.4.weight"], sd["cls_aux.4.bias"])
    assert np.abs(aux - want_aux).max() / np.abs(want_aux).max() < 1e-5


def test_an_unknown_tensor_is_refused_by_name(official_case):
    raw = dict(official_case[3], **{"head.cpam_dec.extra.weight": np.zeros(3, "float32")})
    with pytest.raises(UserError, match=r"dran101\.pth\.tar: .*head\.cpam_dec\.extra\.weight"):
        dran.convert(raw, {}, path="dran101.pth.tar")


@pytest.mark.parametrize("missing", ["head.cpam_dec.conv_key.weight", "head.clgd.gamma", "cls_seg.1.bias",
                                     "head.cpam_enc.conv3.1.running_var", "cls_aux.4.bias",
                                     "pretrained.conv1.4.running_mean"])
def test_a_truncated_state_dict_is_refused_by_name(official_case, missing):
    raw = {k: v for k, v in official_case[3].items() if k != missing}
    with pytest.raises(UserError, match=r"dran101\.pth\.tar: .*" + re.escape(missing)):
        dran.convert(raw, {}, path="dran101.pth.tar")


@pytest.mark.parametrize("options, expected", [
    ({}, dict(output_stride=8, multi_grid=True, multi_dilation=[4, 8, 16])),
    ({"output_stride": 16}, dict(output_stride=16, multi_grid=False)),
    ({"multi_grid": False}, dict(output_stride=8, multi_grid=False)),
])
def test_options_override_the_released_settings(official_case, options, expected):
    imported = dran.convert(official_case[3], {}, **options)
    assert {k: imported.config[k] for k in expected} == expected


DANET_OFFICIAL_KEYS = ["pretrained.conv1.weight", "head.conv5a.0.weight", "head.sa.query_conv.weight",
                       "head.sc.gamma", "head.conv8.1.weight"]  # junfu1115/DANet's DANet (danet.py, da_att.py)


def test_detection_is_unambiguous(official_case):
    keys = list(official_case[3])
    assert dran.detect(keys) and dran.detect(["module." + k for k in keys])
    assert not dran.detect(DANET_OFFICIAL_KEYS)
    assert not [name for name in SOURCES if name != "dran" and source_module(name).detect(keys)]


def test_the_registry_finds_dran_files_by_their_keys():
    from danet.weights.sources import detect_source

    keys = {"head.cpam_dec.conv_query.weight": 0, "cls_seg.1.weight": 0, "pretrained.conv1.0.weight": 0}
    assert detect_source(keys) == "dran"
