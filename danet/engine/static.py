"""The static-graph (Executor) training step: Programs built from the same model definition.

The train Program and the eval Program are traced from two fresh model instances under
``unique_name.guard()``, so their parameters get identical names and share storage in the scope;
the eval one is built in eval mode (BatchNorm uses running statistics, no dropout). On Paddle 3.x
these are PIR Programs; no ``clone(for_test=True)`` and no ``CompiledProgram`` (both fail there).
"""
import json
import logging
import os

import numpy as np
import paddle

from danet import build_model, checkpoint, weights
from danet.engine.common import build_optimizer, build_scheduler, model_config, rename_state
from danet.errors import UserError
from danet.losses import danet_loss

log = logging.getLogger(__name__)


def _image_input():
    return paddle.static.data("image", [None, 3, None, None], "float32")


class StaticStep:
    """One Executor training step; the process must be in static mode (see ``danet.train``)."""

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
            loss, parts = danet_loss(model(image), label)
            self.scheduler = build_scheduler(args, steps_per_epoch)
            self._optimizer(args).minimize(loss)
            self.names = {k: v.name for k, v in model.state_dict().items()}
        self.fetch = [loss] + list(parts)
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
        return float(out[0]), [float(p) for p in out[1:]], lr

    def predict_fn(self, window_batch=2):
        def predict(batch):
            outs = [self.exe.run(self.eval_prog, feed={"image": np.ascontiguousarray(batch[i:i + window_batch],
                                                                                    np.float32)},
                                 fetch_list=[self.eval_out])[0] for i in range(0, len(batch), window_batch)]
            return np.concatenate(outs)

        return predict

    def _set(self, arrays):
        paddle.static.set_program_state(self.main, arrays)

    def load_initial(self, path):
        found, info = weights.read_weights(path)
        shapes = {k: self._shape(prog) for k, prog in self.names.items()}
        weights.match({k: np.empty(s, np.uint8) for k, s in shapes.items() if k in found}, found, info["path"])
        missing = [k for k in self.names if k not in found]
        if missing:
            log.warning("%s has %d of %d model tensors; %d keep their initial values (e.g. %s)", info["path"],
                        len(self.names) - len(missing), len(self.names), len(missing), missing[:3])
        self._set({self.names[k]: v for k, v in found.items() if k in self.names})
        log.info("loaded %d of %d tensors from %s (%s format)", len(self.names) - len(missing), len(self.names),
                 info["path"], info["format"])

    def _shape(self, prog_name):
        return np.array(paddle.static.global_scope().find_var(prog_name).get_tensor()).shape

    def write_files(self, folder):
        paddle.static.save(self.main, os.path.join(folder, "model"))
        with open(os.path.join(folder, weights.NAMES_FILE), "w") as f:
            json.dump(self.names, f, indent=0)

    def restore(self, ckpt_dir, state):
        arrays = checkpoint.safe_load(os.path.join(ckpt_dir, "model.pdparams"))
        arrays.update(checkpoint.safe_load(os.path.join(ckpt_dir, "model.pdopt")))
        saved = _saved_names(ckpt_dir, self.names)
        arrays = rename_state(arrays, {saved[k]: p for k, p in self.names.items() if k in saved})
        expected = {k: np.empty(self._shape(p), np.uint8) for k, p in self.names.items()}  # shapes only
        weights.match(expected, {k: arrays[p] for k, p in self.names.items() if p in arrays}, ckpt_dir)
        self._set({k: v for k, v in arrays.items() if isinstance(v, np.ndarray)})
        self.scheduler.set_state_dict(state["scheduler"])


def _saved_names(ckpt_dir, default):
    """{structured name: program name} of the process that wrote ``ckpt_dir`` (its names.json)."""
    path = os.path.join(ckpt_dir, weights.NAMES_FILE)
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)
