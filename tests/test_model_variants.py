"""The architecture options of build_model (stems, ResNet-D shortcuts, output stride, dilation schedule,
upsampling, auxiliary head): shapes, gradients, static = dygraph, the structure each option promises, and
defaults that are still exactly the paper's model."""
import hashlib
import inspect
import json
import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from numpy.testing import assert_allclose
from tracelib import as_list, trace_and_run

from danet import build_model
from danet.engine.static import static_mode  # dygraph again after the block
from danet.errors import UserError
from danet.models import danet as danet_module
from danet.models.danet import VARIANT_DEFAULTS
from danet.models.layers import shortcut

# (numpy.testing is imported at collection: numpy 1.x runs `lscpu` when it is first loaded, and conftest's check
# for started processes would blame that on the test that first used np.testing.)

C = 5  # classes of the small test models
H, W = 33, 45  # odd sizes: every stride-2 step rounds up

# One case per released model family, plus the single options; (id, backbone, options). Small aux heads keep
# the tests fast; the default 256 channels are checked by name in test_aux_head_parameters.
VARIANTS = [
    ("default", "resnet18", {}),
    ("deep32", "resnet18", dict(stem="deep32")),
    ("deep64", "resnet18", dict(stem="deep64")),
    ("os16", "resnet18", dict(output_stride=16)),
    ("os32-avgdown", "resnet18", dict(output_stride=32, avg_down=True)),
    ("os16-multigrid", "resnet18", dict(output_stride=16, multi_grid=True, multi_dilation=(2, 4))),
    ("paddleseg", "resnet50", dict(stem="deep32", avg_down=True, halve_first_dilation=False, align_corners=False,
                                   align_mode=1)),
    ("mmseg-aux", "resnet18", dict(stem="deep32", align_corners=False, aux_head=True, aux_channels=16)),
    ("sssegmentation-os16-aux", "resnet50", dict(stem="deep32", output_stride=16, align_corners=False,
                                                 aux_head=True, aux_channels=32)),
    ("official-deepstem", "resnet18", dict(stem="deep64", multi_grid=True, multi_dilation=(4, 8))),
]
IDS = [v[0] for v in VARIANTS]


def _image(b=2, h=H, w=W, seed=0):
    return np.random.default_rng(seed).normal(size=(b, 3, h, w)).astype(np.float32)


def _build(backbone, options, gamma=0.5, **extra):
    """A model with both attention gammas set (a fresh model has gamma = 0: attention is skipped)."""
    model = build_model(backbone, C, **options, **extra)
    for name, param in model.named_parameters():
        if name.endswith("gamma"):
            param.set_value(np.full(param.shape, gamma, np.float32))
    return model


@pytest.fixture(scope="module", params=VARIANTS, ids=IDS)
def variant(request):
    _, backbone, options = request.param
    paddle.seed(0)
    return _build(backbone, options), options


@pytest.mark.parametrize("training", [True, False])
def test_every_output_has_the_input_size(variant, training):
    model, options = variant
    model.train() if training else model.eval()
    with paddle.no_grad():
        out = model(paddle.to_tensor(_image()))
    if not training:  # eval: the fused logits only, never the auxiliary ones
        assert isinstance(out, paddle.Tensor) and list(out.shape) == [2, C, H, W]
        return
    expected = 4 if options.get("aux_head") else 3  # (fused, position, channel[, auxiliary])
    assert [list(o.shape) for o in out] == [[2, C, H, W]] * expected


def test_every_parameter_receives_a_gradient(variant):
    model, _ = variant
    model.train()
    model.clear_gradients()
    label = paddle.to_tensor(np.random.default_rng(1).integers(0, C, size=(2, 1, H, W)))
    outputs = model(paddle.to_tensor(_image()))
    # every output in the loss, as training does (the loss weights are chosen elsewhere)
    paddle.add_n([F.cross_entropy(o, label, axis=1) for o in outputs]).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if not p.stop_gradient}
    dead = [n for n, g in grads.items() if g is None or float(g.abs().max()) == 0.0]
    assert not dead, f"no gradient for {dead}"
    assert any(n.startswith("aux_head.") for n in grads) == bool(model.config["aux_head"])
    model.clear_gradients()


def test_the_auxiliary_head_runs_only_in_training():
    model = _build("resnet18", dict(aux_head=True, aux_channels=8))
    calls = []
    model.aux_head.register_forward_pre_hook(lambda layer, inputs: calls.append(inputs[0].shape))
    with paddle.no_grad():
        model.eval()
        assert isinstance(model(paddle.to_tensor(_image(1))), paddle.Tensor)
        assert calls == []
        model.train()
        assert len(model(paddle.to_tensor(_image(1)))) == 4
    assert calls == [[1, 256, 5, 6]]  # layer3's output (ResNet-18: 256 channels) at stride 8


def test_aux_head_parameters():
    with paddle.LazyGuard():
        model = build_model("resnet50", 19, aux_head=True)
    params = {n: p for n, p in model.named_parameters() if n.startswith("aux_head.")}
    assert {n: list(p.shape) for n, p in params.items()} == {
        "aux_head.conv.0.weight": [256, 1024, 3, 3],  # on layer3's 1024 channels
        "aux_head.conv.1.weight": [256], "aux_head.conv.1.bias": [256],
        "aux_head.conv.1._mean": [256], "aux_head.conv.1._variance": [256],
        "aux_head.cls.weight": [19, 256, 1, 1], "aux_head.cls.bias": [19],
    }
    trainable = [p for p in params.values() if not p.stop_gradient]
    assert len(trainable) == 5 and {p.optimize_attr["learning_rate"] for p in trainable} == {10.0}  # the head's


@pytest.mark.heavy
@pytest.mark.parametrize("case", VARIANTS, ids=IDS)
def test_static_program_gives_the_dygraph_outputs(case):
    """Eval logits, and with an auxiliary head also the four train-mode outputs (dropout off, batch statistics)."""
    _, backbone, options = case
    modes = [False, True] if options.get("aux_head") else [False]
    model = _build(backbone, options, gamma=0.3, dropout=0.0)
    images = [_image(1, H, W, seed=6), _image(2, 24, 37, seed=7)]
    state = {k: v.numpy() for k, v in model.state_dict().items()}  # before train mode moves the BN statistics
    want = {}
    with paddle.no_grad():
        for training in modes:
            model.train() if training else model.eval()
            want[training] = [[o.numpy() for o in as_list(model(paddle.to_tensor(x)))] for x in images]
    for training in modes:
        got = trace_and_run(lambda: build_model(backbone, C, dropout=0.0, **options), state, images, training)
        for g, w in zip(got, want[training]):
            assert [o.shape for o in g] == [o.shape for o in w]
            for go, wo in zip(g, w):
                assert_allclose(go, wo, rtol=0, atol=2e-5)


@pytest.mark.parametrize("stem", ["7x7", "deep32"])
@pytest.mark.parametrize("flags, stride", [({}, 8), (dict(output_stride=8), 8), (dict(output_stride=16), 16),
                                           (dict(output_stride=32), 32), (dict(dilated=True), 8),
                                           (dict(dilated=False), 32), (dict(dilated=True, output_stride=16), 16)])
def test_output_stride_is_the_size_of_the_last_feature_map(stem, flags, stride):
    model = build_model("resnet18", C, stem=stem, **flags)
    model.eval()
    with paddle.no_grad():
        features = model.backbone(paddle.to_tensor(_image(1)))
    sizes = [list(f.shape[2:]) for f in features]
    # stride-2 steps with "same" padding round up, and ceil(ceil(n / a) / b) = ceil(n / (a * b))
    want = [[math.ceil(H / s), math.ceil(W / s)] for s in (4, 8, min(stride, 16), stride)]
    assert sizes == want
    assert model.config["output_stride"] == stride and model.config["dilated"] == (stride != 32)


def _pools(model):
    return [n for n, layer in model.named_sublayers() if isinstance(layer, nn.AvgPool2D)]


@pytest.mark.parametrize("stride, pooled", [(8, ["layer2"]), (16, ["layer2", "layer3"]),
                                            (32, ["layer2", "layer3", "layer4"])])
@pytest.mark.parametrize("backbone, stem", [("resnet50", "deep32"), ("resnet18", "deep64")])
def test_avg_down_pools_only_the_strided_shortcuts(backbone, stem, stride, pooled):
    with paddle.LazyGuard():
        plain = build_model(backbone, C, stem=stem, output_stride=stride)
        vd = build_model(backbone, C, stem=stem, output_stride=stride, avg_down=True)
    # layer1 (stride 1, a projection for 64 or 128 -> 256 channels) and dilated first blocks keep the plain 1x1
    assert _pools(vd) == [f"backbone.{layer}.0.downsample.pool" for layer in pooled]
    assert _pools(plain) == []
    # the pool has no parameters: checkpoints of both variants have the same names and shapes
    assert {k: v.shape for k, v in vd.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}


def test_avg_down_shortcut_averages_the_valid_pixels_of_each_2x2_window():
    x = np.random.default_rng(3).normal(size=(1, 4, 5, 7)).astype(np.float32)
    layer = shortcut(4, 6, 2, avg_down=True)
    layer.eval()  # BN with fresh statistics: y = x / sqrt(1 + eps)
    weight = layer[1].weight.numpy()[:, :, 0, 0]  # [6, 4]
    with paddle.no_grad():
        got = layer(paddle.to_tensor(x)).numpy()
    padded = np.pad(x, [(0, 0), (0, 0), (0, 1), (0, 1)], constant_values=np.nan)  # ceil_mode: 5x7 -> 3x4
    windows = padded.reshape(1, 4, 3, 2, 4, 2)
    pooled = np.nanmean(windows, axis=(3, 5))  # the mean of the pixels inside the image only (exclusive)
    want = np.einsum("oc,bchw->bohw", weight, pooled) / np.sqrt(1 + 1e-5)
    assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _dilations(layer):
    return [block.dilation for block in layer]


@pytest.mark.parametrize("options, layer3, layer4", [
    (dict(), [1] + [2] * 5, [2, 4, 4]),  # the paper's code, mmseg contract_dilation
    (dict(halve_first_dilation=False), [2] * 6, [4, 4, 4]),  # PaddleSeg
    (dict(output_stride=16), [1] * 6, [1, 2, 2]),  # the official repository's and sssegmentation's D16
    (dict(output_stride=16, halve_first_dilation=False), [1] * 6, [2, 2, 2]),  # PaddleSeg's output stride 16
    (dict(output_stride=32), [1] * 6, [1, 1, 1]),
    (dict(multi_grid=True), [1] + [2] * 5, [4, 8, 16]),  # the grid replaces layer4's schedule
    (dict(multi_grid=True, halve_first_dilation=False), [2] * 6, [4, 8, 16]),
    (dict(multi_grid=True, multi_dilation=(2, 4, 8), output_stride=16), [1] * 6, [2, 4, 8]),
])
def test_dilation_schedule(options, layer3, layer4):
    with paddle.LazyGuard():
        model = build_model("resnet50", C, **options)
    backbone = model.backbone
    assert _dilations(backbone.layer1) + _dilations(backbone.layer2) == [1] * 7
    assert (_dilations(backbone.layer3), _dilations(backbone.layer4)) == (layer3, layer4)
    # and the 3x3 convolutions really use them
    assert [list(b.conv2[0]._dilation) for b in backbone.layer4] == [[d, d] for d in layer4]


def _bilinear(x, out_h, out_w, how):
    """Reference resize of x [B, C, h, w]; how: 'corners' (align_corners=True), 'half_pixel' (PyTorch's
    align_corners=False: source = (dst + 0.5) * in / out - 0.5, clamped at 0) or 'asymmetric' (dst * in / out)."""
    def taps(n_in, n_out):
        dst = np.arange(n_out, dtype=np.float64)
        if how == "corners":
            src = dst * (n_in - 1) / max(n_out - 1, 1)
        elif how == "half_pixel":
            src = np.maximum((dst + 0.5) * n_in / n_out - 0.5, 0.0)
        else:
            src = dst * n_in / n_out
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    y0, y1, wy = taps(x.shape[2], out_h)
    x0, x1, wx = taps(x.shape[3], out_w)
    rows = x[:, :, y0] * (1 - wy)[:, None] + x[:, :, y1] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


@pytest.mark.parametrize("align_corners, align_mode, how", [(True, 0, "corners"), (False, 0, "half_pixel"),
                                                             (False, 1, "asymmetric")])
def test_final_upsampling_follows_align_corners_and_align_mode(align_corners, align_mode, how):
    model = _build("resnet18", dict(align_corners=align_corners, align_mode=align_mode))
    model.eval()
    x = paddle.to_tensor(_image(1))
    with paddle.no_grad():
        logits = model.head(model.backbone(x)[-1])[0].numpy()  # [1, C, 5, 6] at stride 8
        got = model(x).numpy()
    assert_allclose(got, _bilinear(logits, H, W, how), rtol=1e-5, atol=1e-4)  # float32 vs float64
    others = {"corners", "half_pixel", "asymmetric"} - {how}
    assert all(np.abs(got - _bilinear(logits, H, W, o)).max() > 1e-2 for o in others)


def _structure_digest(backbone):
    """sha256 of the structured names, shapes and static Program variable names of a default model."""
    dygraph = build_model(backbone, C)
    names = [(k, list(v.shape)) for k, v in dygraph.state_dict().items()]
    with static_mode():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
            image = paddle.static.data("image", [None, 3, None, None], "float32")
            traced = build_model(backbone, C)
            traced.eval()
            traced(image)
            static = {k: v.name for k, v in traced.state_dict().items()}
    return hashlib.sha256(json.dumps(dict(names=names, static=static), sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("backbone, digest", [
    ("resnet18", "1e25be527a7faa73d63223fe28d2164f8319a75fde11fd06d708c285ae15019e"),
    ("resnet50", "8eae514ceb3b9a9f190869cbe29dcaae3dc06627fdd6a833b63dd5de6a096e36"),
])
def test_default_model_is_unchanged(backbone, digest):
    """Recorded (Paddle 2.6.2 and 3.3.1 alike) from the model before the variants existed: the same state-dict
    names, order and shapes, and the same Program variable names (Executor checkpoints are keyed by them)."""
    assert _structure_digest(backbone) == digest


def test_variant_defaults_are_the_signature_defaults():
    params = inspect.signature(danet_module.build_model).parameters
    assert {k: params[k].default for k in VARIANT_DEFAULTS} == VARIANT_DEFAULTS


def test_explicit_defaults_and_config_round_trip():
    with paddle.LazyGuard():
        implicit = build_model("resnet50", 19)
        explicit = build_model("resnet50", 19, dilated=True, **dict(VARIANT_DEFAULTS, output_stride=8))
    assert implicit.config == explicit.config
    assert set(VARIANT_DEFAULTS) <= set(implicit.config)
    assert implicit.config == dict(num_classes=19, backbone="resnet50", dilated=True, multi_grid=False,
                                   multi_dilation=[4, 8, 16], head_lr_mult=10.0, dropout=0.1, output_stride=8,
                                   stem="7x7", avg_down=False, halve_first_dilation=True, align_corners=True,
                                   align_mode=0, aux_head=False, aux_channels=256, input_norm="imagenet", model="danet")


@pytest.mark.parametrize("case", VARIANTS, ids=IDS)
def test_config_rebuilds_the_same_model(case):
    _, backbone, options = case
    with paddle.LazyGuard():
        model = build_model(backbone, C, **options)
        again = build_model(**model.config)
    assert again.config == model.config
    shapes = [[(k, v.shape) for k, v in m.state_dict().items()] for m in (model, again)]
    assert shapes[0] == shapes[1]


@pytest.mark.parametrize("stem, shapes", [
    ("deep32", [[32, 3, 3, 3], [32, 32, 3, 3], [64, 32, 3, 3]]),
    ("deep64", [[64, 3, 3, 3], [64, 64, 3, 3], [128, 64, 3, 3]]),
])
def test_deep_stem_parameters(stem, shapes):
    with paddle.LazyGuard():
        model = build_model("resnet50", C, stem=stem)
    state = model.state_dict()
    assert [list(state[f"backbone.stem.{i}.0.weight"].shape) for i in range(3)] == shapes
    assert all(f"backbone.stem.{i}.1.{s}" in state for i in range(3) for s in ("weight", "bias", "_mean", "_variance"))
    assert not any(k.startswith("backbone.conv1.") for k in state)
    assert list(state["backbone.layer1.0.downsample.0.weight"].shape) == [256, shapes[-1][0], 1, 1]


@pytest.mark.parametrize("options, message", [
    (dict(stem="deep"), r"unknown stem 'deep': choose one of 7x7, deep32, deep64"),
    (dict(output_stride=4), r"output_stride must be one of 8, 16, 32, got 4"),
    (dict(dilated=False, output_stride=8), r"dilated=False contradicts output_stride=8"),
    (dict(dilated=True, output_stride=32), r"dilated=True contradicts output_stride=32"),
    (dict(output_stride=32, multi_grid=True), r"--multi_grid needs a dilated backbone \(output stride 8 or 16\)"),
    (dict(align_corners=False, align_mode=2), r"align_mode must be 0 \(half-pixel\) or 1 \(asymmetric\), got 2"),
    (dict(align_mode=1), r"align_mode=1 applies only with align_corners=False"),
])
def test_contradictory_or_unknown_options_are_refused(options, message):
    with pytest.raises(UserError, match=message), paddle.LazyGuard():
        build_model("resnet18", C, **options)
