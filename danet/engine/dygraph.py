"""The dygraph training step, checkpointing and validation predictor."""
import logging
import os

import numpy as np
import paddle

from danet import build_model, weights
from danet.checkpoint import save_arrays
from danet.engine.common import build_optimizer, build_scheduler, model_config, model_loss
from danet.engine.static import checked_optimizer_state
from danet.engine.step import StepResult
from danet.inference import dygraph_predict_fn
from danet.losses import danet_loss

log = logging.getLogger(__name__)


class DygraphStep:
    """One imperative training step (see :class:`danet.engine.step.Step`): forward, loss, backward,
    Momentum update, LR step."""

    format = "dygraph"

    def __init__(self, args, steps_per_epoch, model_kwargs=None):
        self.args = args
        self.config = model_config(args)
        self.model = build_model(**self.config, **(model_kwargs or {}))
        self.output_names, self.loss_weights = model_loss(self.model, args)
        self.scheduler = build_scheduler(args, steps_per_epoch)
        self.parallel = paddle.distributed.get_world_size() > 1 and args.use_data_parallel
        if self.parallel:
            if args.cuda:  # SyncBatchNorm has no CPU kernel
                self.model = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = paddle.DataParallel(self.model)
        else:
            self.net = self.model
        self.optimizer = build_optimizer(args, self.scheduler, self.model.parameters())
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=1024) if args.amp and args.cuda else None
        self.model.train()

    def run(self, images, labels):
        lr = self.optimizer.get_lr()
        # Worker processes hand over tensors already; to_tensor on a tensor would copy it (and warn).
        images, labels = (t if isinstance(t, paddle.Tensor) else paddle.to_tensor(t) for t in (images, labels))
        with paddle.amp.auto_cast(enable=self.scaler is not None, level="O1"):
            outputs = self.net(images)
        loss, parts = danet_loss(outputs, labels, self.loss_weights, names=self.output_names)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.clear_grad()
        self.scheduler.step()
        return StepResult(float(loss), {k: float(v) for k, v in parts.items()}, lr)

    def predict_fn(self, window_batch=2):
        return dygraph_predict_fn(self.model, window_batch)

    def load_initial(self, path, found=None):
        found = found or weights.read_weights(path, self.config)
        return weights.load_into(self.model, None, strict=False, weights=found)

    def write_files(self, folder):
        save_arrays(os.path.join(folder, "model.pdparams"), {k: v.numpy() for k, v in self.model.state_dict().items()})
        # Optimizer state by structured name: Paddle's parameter names (conv2d_17.w_0) depend on what the process
        # built before, so they are not a stable key.
        names = {p.name: k for k, p in self.model.named_parameters()}
        paddle.save(weights.rename_state(self.optimizer.state_dict(), names),
                    os.path.join(folder, weights.OPTIMIZER_FILE))
        if self.scaler is not None:
            paddle.save(self.scaler.state_dict(), os.path.join(folder, "scaler.pdparams"))

    def restore(self, ckpt_dir, state):
        saved = weights.read_weights(ckpt_dir)
        weights.load_into(self.model, None, strict=True, weights=saved)
        shapes = {k: v.shape for k, v in self.model.state_dict().items()}
        trainable = [k for k, p in self.model.named_parameters() if not p.stop_gradient]
        opt_state = checked_optimizer_state(saved, trainable, shapes)
        opt_state = {k: paddle.to_tensor(v) if isinstance(v, np.ndarray) else v for k, v in opt_state.items()}
        opt_state = weights.rename_state(opt_state, {k: p.name for k, p in self.model.named_parameters()})
        self.optimizer.set_state_dict(opt_state)
        self.scheduler.set_state_dict(state["scheduler"])
        if self.scaler is not None and os.path.exists(os.path.join(ckpt_dir, "scaler.pdparams")):
            self.scaler.load_state_dict(weights.safe_load(os.path.join(ckpt_dir, "scaler.pdparams")))
