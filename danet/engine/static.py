"""The static-graph (Executor) training step: Programs built from the same model definition.

The train Program and the eval Program are traced from two fresh model instances under
``unique_name.guard()``, so their parameters get identical names and share storage in the scope;
the eval one is built in eval mode (BatchNorm uses running statistics, no dropout). On Paddle 3.x
these are PIR Programs; no ``clone(for_test=True)`` and no ``CompiledProgram`` (both fail there).
"""
import contextlib
import json
import logging
import os

import numpy as np
import paddle

from danet import build_model, weights
from danet.engine.common import arch, build_optimizer, build_scheduler, model_config, model_loss
from danet.engine.step import StepResult
from danet.errors import UserError
from danet.losses import danet_loss

log = logging.getLogger(__name__)


def _image_input():
    return paddle.static.data("image", [None, 3, None, None], "float32")


@contextlib.contextmanager
def static_mode():
    """Static graph inside the block; dygraph restored after it if it was on (enable_static is process-global)."""
    dynamic = paddle.in_dynamic_mode()
    paddle.enable_static()
    try:
        yield
    finally:
        if dynamic:
            paddle.disable_static()


class StaticEval:
    """The eval Program of danet.train_executor, traced from a fresh model of ``config``.

    ``names`` {structured name: program variable name} and ``shapes`` {structured name: dims}, in
    model order: the names any Executor checkpoint of this config uses. :meth:`run` executes it in a
    private scope, so a training process's scope is untouched.
    """

    def __init__(self, config):
        with static_mode():
            self.program, self.startup = paddle.static.Program(), paddle.static.Program()
            with paddle.static.program_guard(self.program, self.startup), paddle.utils.unique_name.guard():
                image = _image_input()
                model = build_model(**arch(config))
                model.eval()
                self.output = model(image)
                state = model.state_dict()
            self.names = {k: v.name for k, v in state.items()}
            self.shapes = {k: [int(d) for d in v.shape] for k, v in state.items()}

    def run(self, arrays, image):
        """Logits float32 [B, C, H, W] of ``image`` [B, 3, H, W] with ``arrays`` keyed by program name."""
        with static_mode():
            exe = paddle.static.Executor(paddle.CPUPlace())
            with paddle.static.scope_guard(paddle.static.Scope()):
                exe.run(self.startup)
                paddle.static.set_program_state(self.program, {p: arrays[p] for p in self.names.values()})
                return np.asarray(exe.run(self.program, feed={"image": image}, fetch_list=[self.output])[0])


class StaticStep:
    """One Executor training step (see :class:`danet.engine.step.Step`); the process must be in static mode."""

    format = "executor"

    def __init__(self, args, steps_per_epoch, model_kwargs=None):
        self.args = args
        self.config = model_config(args)
        kwargs = dict(self.config, **(model_kwargs or {}))
        self.parallel = paddle.distributed.get_world_size() > 1 and args.use_data_parallel
        if self.parallel:
            if not args.cuda:
                raise UserError("static-graph data parallel runs on GPUs only (fleet collective has no CPU path in "
                                "Paddle 3.x): add --cuda, or use danet.train_dygraph for CPU processes")
            from paddle.distributed import fleet

            fleet.init(is_collective=True)
        self.main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(self.main, startup), paddle.utils.unique_name.guard():
            image = _image_input()
            label = paddle.static.data("label", [None, None, None], "int64")
            model = build_model(**kwargs)
            model.train()
            names, weights_ = model_loss(model, args)
            loss, parts = danet_loss(model(image), label, weights_, names=names)
            self.scheduler = build_scheduler(args, steps_per_epoch)
            self._optimizer(args).minimize(loss)
            self.names = {k: v.name for k, v in model.state_dict().items()}
            self.trainable = [k for k, p in model.named_parameters() if not p.stop_gradient]
        self.part_names = list(parts)
        self.fetch = [loss] + list(parts.values())
        self.eval_prog = paddle.static.Program()
        with paddle.static.program_guard(self.eval_prog, paddle.static.Program()), paddle.utils.unique_name.guard():
            image = _image_input()
            eval_model = build_model(**kwargs)
            eval_model.eval()
            self.eval_out = eval_model(image)
        self.exe = paddle.static.Executor(paddle.CUDAPlace(0) if args.cuda else paddle.CPUPlace())
        self.exe.run(startup)

    def _optimizer(self, args):
        opt = build_optimizer(args, self.scheduler)
        if args.amp and args.cuda:
            # The attention energies overflow fp16: keep matmul/bmm/softmax in fp32 (written from the docs,
            # not run here: AMP does nothing on a CPU).
            lists = paddle.static.amp.AutoMixedPrecisionLists(custom_black_list={"matmul", "matmul_v2", "bmm",
                                                                                 "softmax"})
            opt = paddle.static.amp.decorate(opt, amp_lists=lists, init_loss_scaling=1024,
                                             use_dynamic_loss_scaling=True)
        if self.parallel:
            from paddle.distributed import fleet

            strategy = fleet.DistributedStrategy()
            strategy.sync_batch_norm = True
            opt = fleet.distributed_optimizer(opt, strategy)
        return opt

    def run(self, images, labels):
        lr = self.scheduler()
        out = self.exe.run(self.main, feed={"image": np.asarray(images, np.float32),
                                            "label": np.asarray(labels, np.int64)}, fetch_list=self.fetch)
        self.scheduler.step()
        return StepResult(float(out[0]), dict(zip(self.part_names, map(float, out[1:]))), lr)

    def predict_fn(self, window_batch=2):
        def predict(batch):
            outs = [self.exe.run(self.eval_prog, feed={"image": np.ascontiguousarray(batch[i:i + window_batch],
                                                                                    np.float32)},
                                 fetch_list=[self.eval_out])[0] for i in range(0, len(batch), window_batch)]
            return np.concatenate(outs)

        return predict

    def _shapes(self):
        scope = paddle.static.global_scope()
        return {k: np.array(scope.find_var(p).get_tensor()).shape for k, p in self.names.items()}

    def load_initial(self, path, found=None):
        found = found or weights.read_weights(path, self.config)
        report = weights.fit(self._shapes(), found.tensors, found.path, partial=True)
        paddle.static.set_program_state(self.main, {self.names[k]: found.tensors[k] for k in report.loaded})
        return report.log(f"{found.format} format")

    def write_files(self, folder):
        paddle.static.save(self.main, os.path.join(folder, "model"))
        with open(os.path.join(folder, weights.NAMES_FILE), "w") as f:
            json.dump(self.names, f, indent=0)

    def restore(self, ckpt_dir, state):
        saved = weights.read_weights(ckpt_dir)
        weights.fit(self._shapes(), saved.tensors, saved.path)
        optimizer = checked_optimizer_state(saved, self.trainable, self._shapes())
        arrays = {self.names[k]: v for k, v in saved.tensors.items()}
        arrays.update(weights.rename_state({k: v for k, v in optimizer.items() if isinstance(v, np.ndarray)},
                                           self.names))
        paddle.static.set_program_state(self.main, arrays)
        self.scheduler.set_state_dict(state["scheduler"])


def checked_optimizer_state(saved, trainable, shapes):
    """The structured-name optimizer state of checkpoint ``saved``, refused unless it has a velocity of the
    right shape for every trainable parameter (a resumed run would otherwise restart momentum from zero)."""
    state = saved.optimizer_state()
    if state is None:
        raise UserError(f"{saved.folder} has no optimizer state ({weights.OPTIMIZER_FILE}), so it cannot be resumed: "
                        "start from it with --pretrained instead")
    velocities = {k + weights.VELOCITY: shapes[k] for k in trainable}
    wrong = [k for k, dims in velocities.items() if k not in state or list(np.shape(state[k])) != list(dims)]
    if wrong:
        raise UserError(f"{saved.folder}: the optimizer state lacks {len(wrong)} of {len(velocities)} momentum "
                        f"tensors or has other shapes (e.g. {', '.join(wrong[:3])}); convert the checkpoint again "
                        "with this version, or start from it with --pretrained")
    return state
