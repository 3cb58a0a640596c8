"""What both graph modes share: the model config from the flags, the optimizer, the schedule."""
import paddle

from danet.lr import DANetLR
from danet.models.danet import VARIANT_DEFAULTS

# The model settings that give weights their meaning: two checkpoints agree when these agree. Others
# (--recompute, chunk sizes) change how the same model runs, not what its weights are. Checkpoints from
# before a setting existed get its default, which is the model they were trained as.
ARCH_DEFAULTS = dict(model="danet", backbone="resnet101", num_classes=19, dilated=True, multi_grid=False,
                     multi_dilation=[4, 8, 16], **VARIANT_DEFAULTS)
ARCH_KEYS = tuple(ARCH_DEFAULTS)


def arch(config):
    """The architecture settings of a model config (defaults for those it lacks); see ``ARCH_KEYS``."""
    out = {k: config.get(k, v) for k, v in ARCH_DEFAULTS.items()}
    out["multi_dilation"] = [int(d) for d in out["multi_dilation"]]
    # One spelling of the output stride: given, it decides (dilated means 8 or 16); else dilated does.
    if out["output_stride"] is None:
        out["output_stride"] = 8 if out["dilated"] else 32
    out["dilated"] = out["output_stride"] != 32
    return out


def model_config(args):
    """The keyword arguments of :func:`danet.build_model` that the flags select (saved with checkpoints)."""
    config = arch(vars(args))
    config["recompute"] = bool(getattr(args, "recompute", False))
    return config


def model_loss(model, args):
    """(output names, loss weights) the model declares for its train-mode outputs (``--aux_weight`` for an aux head)."""
    return model.output_names, model.loss_weights(getattr(args, "aux_weight", 0.4))


def build_scheduler(args, steps_per_epoch):
    """The LR schedule over ``epoch_num x steps_per_epoch`` iterations, with optional warm-up."""
    warmup = args.warmup_epoch * steps_per_epoch if args.warm_up else 0
    return DANetLR(args.lr, args.epoch_num * steps_per_epoch, args.lr_scheduler, args.lr_pow, warmup,
                   steps_per_epoch)


def build_optimizer(args, scheduler, parameters=None):
    """Momentum with L2 decay on every parameter (as the seed); head parameters carry a 10x LR in their ParamAttr."""
    return paddle.optimizer.Momentum(learning_rate=scheduler, momentum=args.momentum, parameters=parameters,
                                     weight_decay=paddle.regularizer.L2Decay(args.weight_decay))
