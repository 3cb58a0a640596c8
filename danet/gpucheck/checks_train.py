"""The checks of the training paths: peak memory of a training step, ``--amp`` steps of both graph modes (losses
finite, attention kernels in float32), the Executor trainer's fleet path in one process, and a SyncBatchNorm step
under ``paddle.DataParallel`` against plain BatchNorm. Each takes the device first and returns its details."""
import contextlib
from unittest import mock

from danet.gpucheck.common import (
    GPU_TOLERANCE,
    NUM_CLASSES,
    SAME_TOLERANCE,
    Failed,
    compare,
    finite_losses,
    memory_details,
    on_gpu,
    peak_memory,
    random_batch,
    train_args,
)
from danet.gpucheck.precision import ATTENTION_OPS, check_precision, kernel_dtypes, program_dtypes


def check_memory_train(device, backbone="resnet101", size=(769, 769), batch=2):
    """Peak memory of one dygraph training step (fp32) of ``backbone`` on ``batch`` crops of ``size``."""
    from danet.engine.dygraph import DygraphStep

    step = DygraphStep(train_args("train_dygraph", backbone, batch, cuda=on_gpu(device)), 1)
    images, labels = random_batch(batch, size)
    with peak_memory(device) as peak:
        result = step.run(images, labels)
    finite_losses([result])
    return memory_details(peak, f"{backbone} training step, batch {batch} of {size[0]}x{size[1]}")


def check_train_dygraph(device, backbone="resnet101", size=(512, 512), batch=2, steps=3, amp=True):
    """``steps`` dygraph training steps (``--amp`` when ``amp``): losses finite, attention in float32."""
    from danet.engine.dygraph import DygraphStep

    step = DygraphStep(train_args("train_dygraph", backbone, batch, amp=amp, cuda=on_gpu(device)), steps)
    images, labels = random_batch(batch, size)
    with kernel_dtypes() as counts:
        results = [step.run(images, labels) for _ in range(steps)]
    losses = finite_losses(results)
    return dict(summary=f"losses {losses}; {check_precision(counts, amp)}", losses=losses,
                kernels={op: c for op, c in counts.items() if op in ATTENTION_OPS or op.startswith("conv2d")})


def check_train_executor(device, backbone="resnet101", size=(512, 512), batch=2, steps=3, amp=True,
                         parallel=False):
    """The same with the Executor step (a static Program); ``parallel`` builds it on its fleet path."""
    import paddle

    from danet.engine.static import StaticStep, static_mode

    args = train_args("train_executor", backbone, batch, amp=amp, cuda=on_gpu(device), parallel=parallel)
    images, labels = random_batch(batch, size)
    with static_mode(), paddle.static.scope_guard(paddle.static.Scope()):
        with pretend_world_size(2) if parallel else contextlib.nullcontext():
            step = StaticStep(args, steps)
        if parallel and not step.parallel:
            raise Failed("the trainer did not take its data-parallel path")
        with kernel_dtypes() as counts:
            results = [step.run(images, labels) for _ in range(steps)]
        counts = counts or program_dtypes(step.main)  # Paddle 2.6's executor counts nothing
        sync_bn = sum(1 for op in step.main.global_block().ops if "sync_batch_norm" in _type(op))
    losses = finite_losses(results)
    summary = f"losses {losses}; {check_precision(counts, amp)}"
    if parallel:
        summary += f"; {sync_bn} sync_batch_norm ops in the Program"
    return dict(summary=summary, losses=losses, sync_batch_norm_ops=sync_bn,
                kernels={op: c for op, c in counts.items() if op in ATTENTION_OPS or op.startswith("conv2d")})


def check_executor_fleet(device, backbone="resnet50", size=(256, 256), batch=2, steps=2, amp=True):
    """The Executor trainer's fleet path (``fleet.init``, ``DistributedStrategy(sync_batch_norm)``,
    ``fleet.distributed_optimizer`` over the AMP optimizer) in one process."""
    return check_train_executor(device, backbone, size, batch, steps, amp, parallel=True)


def _type(op):
    return op.name() if callable(getattr(op, "name", None)) else op.type  # PIR Operation / legacy Operator


@contextlib.contextmanager
def pretend_world_size(n):
    """``paddle.distributed.get_world_size()`` answers ``n`` once (the trainer's "more than one process?"), then
    the truth again: fleet's own set-up must see the one process there is."""
    import paddle

    real = paddle.distributed.get_world_size
    answers = iter([n])

    def world_size(*args, **kwargs):
        return next(answers, None) or real(*args, **kwargs)

    with mock.patch.object(paddle.distributed, "get_world_size", world_size):
        yield


def check_syncbn(device, backbone="resnet50", size=(256, 256), batch=2, sync=True):
    """One training step of a SyncBatchNorm model under ``paddle.DataParallel`` (one process) against the same
    step with plain BatchNorm from the same weights: loss, outputs and updated weights. ``sync=False`` runs the
    harness with BatchNorm on both sides (a CPU has no SyncBatchNorm kernel)."""
    import paddle

    from danet import build_model

    paddle.seed(0)
    plain = build_model(backbone, NUM_CLASSES, dropout=0.0)
    state = {k: v.numpy() for k, v in plain.state_dict().items()}
    images, labels = random_batch(batch, size)
    expected = _bn_step(plain, plain, images, labels)
    model = build_model(backbone, NUM_CLASSES, dropout=0.0)
    model.set_state_dict(state)
    if sync:
        model = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    synced = sum(isinstance(layer, paddle.nn.SyncBatchNorm) for layer in model.sublayers())
    if sync and not synced:
        raise Failed("convert_sync_batchnorm left no SyncBatchNorm layer")
    got = _bn_step(model, paddle.DataParallel(model), images, labels)
    tolerance = GPU_TOLERANCE if on_gpu(device) else SAME_TOLERANCE
    diffs = {k: compare(expected[k], got[k], tolerance, f"SyncBatchNorm and BatchNorm {k}") for k in expected}
    return dict(summary=f"{synced} SyncBatchNorm layers; same loss, outputs and updates as BatchNorm to "
                        f"{max(diffs.values()):.2g}", sync_layers=synced, differences=diffs)


def _bn_step(model, net, images, labels):
    """One SGD step of ``net`` (``model`` or its wrapper): loss, fused logits, then a conv weight and a BN's running
    mean afterwards."""
    import paddle
    import paddle.nn.functional as F

    model.train()
    optimizer = paddle.optimizer.SGD(0.01, parameters=model.parameters())
    fused = net(paddle.to_tensor(images))[0]
    loss = F.cross_entropy(fused, paddle.to_tensor(labels), axis=1, ignore_index=255)
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()
    state = model.state_dict()
    return dict(loss=float(loss), logits=fused.numpy(), conv=state["head.pam_in.0.weight"].numpy(),
                running_mean=next(v for k, v in state.items() if k.endswith("_mean")).numpy())
