"""What both graph modes share: the model config from the flags, the optimizer, the schedule."""
import paddle

from danet.lr import DANetLR


def model_config(args):
    """The keyword arguments of :func:`danet.build_model` that the flags select (saved with checkpoints)."""
    return dict(backbone=args.backbone, num_classes=args.num_classes, dilated=args.dilated,
                multi_grid=args.multi_grid, multi_dilation=list(args.multi_dilation), recompute=args.recompute)


def build_scheduler(args, steps_per_epoch):
    """The LR schedule over ``epoch_num x steps_per_epoch`` iterations, with optional warm-up."""
    warmup = args.warmup_epoch * steps_per_epoch if args.warm_up else 0
    return DANetLR(args.lr, args.epoch_num * steps_per_epoch, args.lr_scheduler, args.lr_pow, warmup,
                   steps_per_epoch)


def build_optimizer(args, scheduler, parameters=None):
    """Momentum with L2 decay on every parameter (as the seed); head parameters carry a 10x LR in their ParamAttr."""
    return paddle.optimizer.Momentum(learning_rate=scheduler, momentum=args.momentum, parameters=parameters,
                                     weight_decay=paddle.regularizer.L2Decay(args.weight_decay))


def rename_state(state, names):
    """Re-key parameters and their optimizer state (``<param>_velocity_0``) by ``names`` {old name: new}.

    Paddle names parameters by a per-process counter (``conv2d_17.w_0``), which differs in a process
    that built other layers first or runs other model code; checkpoints are re-keyed through the
    structured names so any process can resume them. Other keys (the LR, old checkpoints) are kept.
    """
    out = {}
    for key, value in state.items():
        owner = max((n for n in names if key == n or key.startswith(n + "_")), key=len, default=None)
        out[names[owner] + key[len(owner):] if owner else key] = value
    return out
