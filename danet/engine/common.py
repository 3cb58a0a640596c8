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
