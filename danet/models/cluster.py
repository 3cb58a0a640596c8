"""ClusterDANet: DANet with a soft k-means clustering layer before each attention module.

A port of MarnixE/DANet, an experimental student project (no published weights):
``encoding/models/sseg/clusterdanet.py`` (``ClusterDANet``, ``clusterDANetHead``) and
``encoding/nn/da_clust.py`` (``ClusteringModule``), which copies ConstellationNet's ``FeatureClusteringMinibatch``
(mlpc-ucsd/ConstellationNet, ``models/constell_clustering.py``). One deliberate difference: an epsilon in
the batch means (see :meth:`ClusteringLayer._update`).
"""
import contextlib

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from danet.errors import UserError
from danet.models.attention import PositionAttention, _fp32
from danet.models.danet import DAHead, DANet, _lr
from danet.models.layers import ConvBNReLU

EPS = 1e-12  # as F.normalize's: keeps an empty cluster's mean finite, negligible for any other


def _fp32_matmul():
    """No AMP inside: fp16's ~3 digits of a cosine similarity are 0.1 in the logits temperature * similarity.
    (Dygraph only: the Executor's AMP lists keep matmul and softmax in fp32.)"""
    return paddle.amp.auto_cast(enable=False) if paddle.in_dynamic_mode() else contextlib.nullcontext()


class ClusteringLayer(nn.Layer):
    """Online mini-batch soft k-means over pixel features (ConstellationNet's ``FeatureClusteringMinibatch``).

    [B, C, H, W] -> [B, K, H, W]: the cosine similarity of each pixel feature to each of K centroids. No
    learnable parameter and no loss: in train mode every forward moves the centroids towards the batch
    (Sculley's mini-batch k-means with the soft assignments softmax(temperature * similarity)); in eval mode
    they are frozen. Gradients reach the input only.

    ``centroids`` [K, C] and ``counts`` [K] are non-trainable parameters, as BatchNorm keeps its running
    statistics: ``register_buffer`` takes dygraph tensors only, and these must also be persistable variables of
    a static Program that the Executor updates. Every clustering layer starts from the same centroids,
    row-normalised ``RandomState(1).randn`` (the original's ``fix_init``); the counts start at 1.
    """

    def __init__(self, channels=512, num_clusters=512, temperature=100.0):
        super().__init__()
        self.num_clusters, self.temperature = int(num_clusters), float(temperature)
        centroids = np.random.RandomState(1).randn(num_clusters, channels).astype(np.float32)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), EPS)
        self.centroids = self._state(centroids)
        # float32, not the original's float64: rounding s += mass loses at most 2^-24 of s per step, so after
        # 10^5 steps the counts, and with them the step sizes mass / s, are off by under 1%, which this
        # heuristic step size does not notice; and every checkpoint array stays float32.
        self.counts = self._state(np.ones(num_clusters, np.float32))

    def _state(self, value):
        attr = paddle.ParamAttr(trainable=False, initializer=nn.initializer.Assign(value))
        state = self.create_parameter(list(value.shape), dtype="float32", attr=attr)
        state.stop_gradient = True
        return state

    def forward(self, x):
        (x,) = _fp32(x)
        with _fp32_matmul():
            u = F.normalize(x, axis=1).transpose([0, 2, 3, 1])    # [B, H, W, C] unit pixel features
            # No .detach() (the centroids stop gradients anyway): traced under PIR it shares the memory, and the
            # Executor's in-place pass then lets the next op write into the centroids (or the output).
            v = F.normalize(self.centroids, axis=1)               # [K, C] unit centroids
            sim = paddle.matmul(u, v, transpose_y=True)            # [B, H, W, K] cosine similarities
            if self.training:
                # no_grad: dygraph records nothing; in a Program the update does not lead to the loss, so the
                # backward pass never visits it. Flattened with one -1: B, H, W are unknown when a Program is traced.
                with paddle.no_grad():
                    self._update(u.reshape([-1, v.shape[1]]), sim.reshape([-1, v.shape[0]]))
        return sim.transpose([0, 3, 1, 2])                         # [B, K, H, W]

    def _update(self, u, sim):
        """One soft k-means step from u [N, C] (unit pixel features) and sim [N, K] (their similarities)."""
        assign = F.softmax(self.temperature * sim, axis=1)               # [N, K] soft memberships m_ik
        mass = assign.sum(axis=0)                                          # [K] this batch's soft count
        # Batch means v'_k = sum_i m_ik u_i / sum_i m_ik. At temperature 100 a cluster far from every pixel gets
        # mass exactly 0 in float32 (on a GPU: Paddle's CPU softmax clips its logits at max - 64): the original's
        # 0 / 0 was NaN, and NaN reached every output after one step. With EPS its mean is 0 and its step
        # (below) is 0: it stays where it is.
        means = paddle.matmul(assign, u, transpose_x=True) / (mass.unsqueeze(1) + EPS)  # [K, C]
        counts = self.counts + mass                                        # [K] Sculley's per-centre counts
        alpha = (mass / counts).unsqueeze(1)                               # [K, 1] step size
        centroids = (1 - alpha) * self.centroids + alpha * means          # [K, C]
        # In place, like BatchNorm's statistics: in dygraph this overwrites the tensors; traced, it is an assign
        # op (PIR: assign_out_) writing the persistable variables, run by the Executor at every step. It comes
        # after the reads above by data dependence, so no executor order can let them see the new values.
        paddle.assign(centroids, output=self.centroids)
        paddle.assign(counts, output=self.counts)


class ClusterDAHead(DAHead):
    """DAHead with a clustering layer between each branch's input conv and its attention module
    (``clusterDANetHead``): PAM and CAM see the K cosine-similarity maps, not the conv features.

    ``num_clusters`` defaults to the head's width ``in_channels // 4`` (512 on ResNet-50/101), as the original
    sets it. Another K gives attention modules on K channels and output convs from K back to that width.
    """

    def __init__(self, in_channels, num_classes, lr_mult=10.0, dropout=0.1, chunk_size=2048, recompute=False,
                 num_clusters=None, temperature=100.0):
        super().__init__(in_channels, num_classes, lr_mult, dropout, chunk_size, recompute)
        inter = in_channels // 4
        num_clusters = inter if num_clusters is None else int(num_clusters)
        if num_clusters < 1 or temperature <= 0:
            raise UserError(f"ClusterDANet needs num_clusters >= 1 and temperature > 0, got {num_clusters} and "
                            f"{temperature}")
        self.pam_cluster = ClusteringLayer(inter, num_clusters, temperature)
        self.cam_cluster = ClusteringLayer(inter, num_clusters, temperature)
        if num_clusters != inter:
            attr = _lr(lr_mult)
            self.pam = PositionAttention(num_clusters, chunk_size=chunk_size, recompute=recompute, param_attr=attr)
            self.pam_out = ConvBNReLU(num_clusters, inter, param_attr=attr)
            self.cam_out = ConvBNReLU(num_clusters, inter, param_attr=attr)

    def forward(self, x):
        pam_feat = self.pam_out(self.pam(self.pam_cluster(self.pam_in(x))))
        cam_feat = self.cam_out(self.cam(self.cam_cluster(self.cam_in(x))))
        fused = self.cls_fused(self.dropout(pam_feat + cam_feat))
        return fused, self.cls_pam(self.dropout(pam_feat)), self.cls_cam(self.dropout(cam_feat))


class ClusterDANet(DANet):
    """DANet whose attention modules work on cluster-similarity maps (MarnixE/DANet's ``ClusterDANet``).

    DANet's arguments plus ``num_clusters`` (None: the head's width, 512 on ResNet-50/101) and ``temperature``
    (K = 100); DANet's outputs and loss weights. Parameters: DANet's, plus the non-trainable
    ``head.{pam,cam}_cluster.{centroids,counts}``, which training moves (see :class:`ClusteringLayer`).
    """

    model_name = "clusterdanet"

    def __init__(self, *args, num_clusters=None, temperature=100.0, **kwargs):
        self._clusters = (num_clusters, temperature)  # read by _build_head, which DANet.__init__ calls
        super().__init__(*args, **kwargs)
        self.config.update(num_clusters=self.head.pam_cluster.num_clusters, temperature=float(temperature))

    def _build_head(self, in_channels, num_classes, head_lr_mult, dropout, chunk_size, recompute):
        num_clusters, temperature = self._clusters
        return ClusterDAHead(in_channels, num_classes, head_lr_mult, dropout, chunk_size, recompute, num_clusters,
                             temperature)
