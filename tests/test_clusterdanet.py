"""ClusterDANet and its clustering layer: the soft k-means update against a numpy reference, no NaN where the
original had one, centroids that training moves and nothing else does, and the same numbers (buffers included)
from a static Program run by an Executor as from dygraph."""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from numpy.testing import assert_allclose
from tracelib import trace_and_run

from danet import build_model
from danet.models.cluster import EPS, ClusterDANet, ClusteringLayer

C = 5  # classes
H, W = 33, 45  # odd sizes: the head sees 5 x 6
BUFFERS = [f"head.{b}_cluster.{s}" for b in ("pam", "cam") for s in ("centroids", "counts")]


def _image(b=2, h=H, w=W, seed=0):
    return np.random.default_rng(seed).normal(size=(b, 3, h, w)).astype(np.float32)


def _model(gamma=0.5, **options):
    """A ResNet-18 ClusterDANet (128 clusters of 128 channels) with both attention gammas set (0 skips them)."""
    model = ClusterDANet(C, "resnet18", **options)
    for name, param in model.named_parameters():
        if name.endswith("gamma"):
            param.set_value(np.full(param.shape, gamma, np.float32))
    return model


def _state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def reference_step(x, centroids, counts, temperature=100.0, eps=EPS, dtype=np.float64):
    """The update rule in numpy: x [B, C, H, W] -> (similarity [B, K, H, W], new centroids, new counts)."""
    x, centroids, counts = (np.asarray(a, dtype) for a in (x, centroids, counts))
    b, c, h, w = x.shape
    u = x.transpose(0, 2, 3, 1).reshape(-1, c)
    u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    sim = u @ (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).T     # [N, K]
    logits = temperature * sim
    m = np.exp(logits - logits.max(axis=1, keepdims=True))
    m /= m.sum(axis=1, keepdims=True)
    mass = m.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = m.T @ u / (mass[:, None] + dtype(eps))
    counts = counts + mass
    alpha = (mass / counts)[:, None]
    return sim.reshape(b, h, w, -1).transpose(0, 3, 1, 2), (1 - alpha) * centroids + alpha * means, counts


def test_the_update_is_the_numpy_rule_step_by_step():
    layer = ClusteringLayer(channels=6, num_clusters=7, temperature=100.0)
    layer.train()
    centroids, counts = layer.centroids.numpy(), layer.counts.numpy()
    for seed in (1, 2):
        x = np.random.default_rng(seed).normal(size=(2, 6, 3, 5)).astype(np.float32)
        want_sim, centroids, counts = reference_step(x, centroids, counts)
        with paddle.no_grad():
            sim = layer(paddle.to_tensor(x)).numpy()
        assert_allclose(sim, want_sim, rtol=1e-5, atol=1e-6)
        assert_allclose(layer.centroids.numpy(), centroids, rtol=1e-4, atol=1e-6)
        assert_allclose(layer.counts.numpy(), counts, rtol=1e-5)


def test_both_layers_start_from_the_same_unit_centroids():
    model = _model()
    pam, cam = model.head.pam_cluster, model.head.cam_cluster
    assert pam.centroids.shape == [128, 128] and pam.counts.shape == [128]
    assert_allclose(pam.centroids.numpy(), cam.centroids.numpy(), rtol=0, atol=0)
    assert_allclose(np.linalg.norm(pam.centroids.numpy(), axis=1), 1.0, rtol=1e-6)
    assert (pam.counts.numpy() == 1).all()


def _unclipped_softmax(x, axis=-1):
    """Softmax as Paddle's GPU kernel computes it, with IEEE float32 exp: exp(x - max) is exactly 0 below -104.
    (Paddle's CPU kernels never give 0: the softmax clips x - max at -64, the exp its input at about -88.)"""
    shifted = x - x.max(axis=axis, keepdim=True)
    e = paddle.where(shifted < -104.0, paddle.zeros_like(shifted), paddle.exp(shifted))
    return e / e.sum(axis=axis, keepdim=True)


def test_peaked_features_empty_clusters_without_nan(monkeypatch):
    """Every pixel on centroid 0's direction: at temperature 100 the clusters facing away get mass exactly 0 in
    float32. The original rule gives them NaN centroids (0 / 0); this one leaves them exactly where they were."""
    monkeypatch.setattr(F, "softmax", _unclipped_softmax)
    layer = ClusteringLayer(channels=16, num_clusters=32)
    layer.train()
    before = layer.centroids.numpy()
    x = np.broadcast_to(before[0][None, :, None, None], (2, 16, 3, 5)).astype(np.float32)
    x = x + np.random.default_rng(0).normal(scale=1e-3, size=x.shape).astype(np.float32)
    _, original, _ = reference_step(x, before, layer.counts.numpy(), eps=0.0, dtype=np.float32)
    empty = np.isnan(original).any(axis=1)
    assert empty.sum() >= 8  # the hazard is real for this input
    with paddle.no_grad():
        for _ in range(2):
            sim = layer(paddle.to_tensor(x)).numpy()
    after = layer.centroids.numpy()
    assert np.isfinite(sim).all() and np.isfinite(after).all() and np.isfinite(layer.counts.numpy()).all()
    assert_allclose(after[empty], before[empty], rtol=0, atol=0)
    assert not np.allclose(after[0], before[0], rtol=0, atol=1e-7)  # the cluster with the pixels moved


@pytest.mark.parametrize("training", [True, False])
def test_output_shapes(training):
    model = _model(aux_head=True, aux_channels=8)
    model.train() if training else model.eval()
    with paddle.no_grad():
        out = model(paddle.to_tensor(_image()))
    if training:
        assert [list(o.shape) for o in out] == [[2, C, H, W]] * 4
        assert model.output_names == ("fused", "position", "channel", "aux")
        assert model.loss_weights(0.25) == (1.0, 1.0, 1.0, 0.25)
    else:
        assert list(out.shape) == [2, C, H, W]


def test_parameter_names_are_danet_s_plus_the_buffers():
    with paddle.LazyGuard():
        danet = build_model("resnet18", C)
        cluster = ClusterDANet(C, "resnet18")
    assert list(cluster.state_dict()) == list(danet.state_dict()) + BUFFERS
    assert all(p.stop_gradient for n, p in cluster.named_parameters() if n in BUFFERS)


def test_centroids_move_in_training_only_and_never_get_a_gradient():
    model = _model()
    x = paddle.to_tensor(_image())
    model.eval()
    before = _state(model)
    with paddle.no_grad():
        model(x)
    assert all((_state(model)[k] == before[k]).all() for k in BUFFERS)
    model.train()
    label = paddle.to_tensor(np.random.default_rng(1).integers(0, C, size=(2, 1, H, W)))
    paddle.add_n([F.cross_entropy(o, label, axis=1) for o in model(x)]).backward()
    after = _state(model)
    assert all(np.abs(after[k] - before[k]).max() > 1e-4 for k in BUFFERS)
    params = dict(model.named_parameters())
    assert all(params[k].grad is None for k in BUFFERS)
    dead = [n for n, p in params.items() if not p.stop_gradient and (p.grad is None or float(p.grad.abs().max()) == 0)]
    assert not dead, f"no gradient for {dead}"


@pytest.mark.heavy
def test_state_dict_round_trip_keeps_the_buffers(tmp_path):
    model = _model()
    model.train()
    with paddle.no_grad():
        model(paddle.to_tensor(_image()))
    path = str(tmp_path / "model.pdparams")
    paddle.save(model.state_dict(), path)
    again = build_model(**model.config)
    assert isinstance(again, ClusterDANet) and again.config == model.config
    again.set_state_dict(paddle.load(path))
    for name, value in _state(model).items():
        assert_allclose(_state(again)[name], value, rtol=0, atol=0, err_msg=name)


def test_other_cluster_counts_and_the_config():
    model = _model(num_clusters=24, temperature=50.0)
    assert model.config["model"] == "clusterdanet"
    assert (model.config["num_clusters"], model.config["temperature"]) == (24, 50.0)
    state = model.state_dict()
    assert state["head.pam_cluster.centroids"].shape == [24, 128]
    assert state["head.pam.value.weight"].shape == [24, 24, 1, 1]
    assert state["head.cam_out.0.weight"].shape == [128, 24, 3, 3]
    model.train()
    with paddle.no_grad():
        assert [list(o.shape) for o in model(paddle.to_tensor(_image(1)))] == [[1, C, H, W]] * 3


@pytest.mark.parametrize("training", [False, True])
def test_static_program_gives_the_dygraph_outputs_and_buffers(training):
    """Two passes (different sizes): the same logits, and in train mode the same centroids and counts after each
    (the Executor runs the Program's in-place update as dygraph does); in eval mode nothing moves."""
    model = _model(gamma=0.3, dropout=0.0)
    start = _state(model)
    images = [_image(2, H, W, seed=6), _image(1, 24, 37, seed=7)]
    model.train() if training else model.eval()
    want = []
    with paddle.no_grad():
        for x in images:
            out = model(paddle.to_tensor(x))
            want.append(([o.numpy() for o in out] if training else [out.numpy()], _state(model)))
    got = trace_and_run(lambda: ClusterDANet(C, "resnet18", dropout=0.0), start, images, training, read_state=True)
    for (got_out, got_state), (want_out, want_state) in zip(got, want):
        for g, w in zip(got_out, want_out):
            assert_allclose(g, w, rtol=0, atol=2e-5)
        for name in BUFFERS:
            assert_allclose(got_state[name], want_state[name], rtol=1e-5, atol=1e-6, err_msg=name)
            assert (got_state[name] != start[name]).any() == training
