"""What both graph modes share: the model config from the flags, the optimizer, the schedule."""
import paddle

from danet.errors import UserError
from danet.lr import DANetLR
from danet.models.danet import VARIANT_DEFAULTS
from danet.models.resnet import out_channels

# The model settings that give weights their meaning: two checkpoints agree when these agree. Others
# (--recompute, chunk sizes) change how the same model runs, not what its weights are. Checkpoints from
# before a setting existed get its default, which is the model they were trained as.
ARCH_DEFAULTS = dict(model="danet", backbone="resnet101", num_classes=19, dilated=True, multi_grid=False,
                     multi_dilation=[4, 8, 16], **VARIANT_DEFAULTS)
ARCH_KEYS = tuple(ARCH_DEFAULTS)
# Settings of one family member: in that member's configs only (None clusters = the head's width).
MEMBER_DEFAULTS = {"clusterdanet": dict(num_clusters=None, temperature=100.0)}
MEMBER_KEYS = tuple(k for defaults in MEMBER_DEFAULTS.values() for k in defaults)


def arch(config):
    """The architecture settings of a model config (defaults for those it lacks); see ``ARCH_KEYS``."""
    out = {k: config.get(k, v) for k, v in ARCH_DEFAULTS.items()}
    out["multi_dilation"] = [int(d) for d in out["multi_dilation"]]
    # One spelling of the output stride: given, it decides (dilated means 8 or 16); else dilated does.
    if out["output_stride"] is None:
        out["output_stride"] = 8 if out["dilated"] else 32
    out["dilated"] = out["output_stride"] != 32
    for key, default in MEMBER_DEFAULTS.get(out["model"], {}).items():
        out[key] = config.get(key, default)
    if out["model"] == "clusterdanet":
        out["num_clusters"] = int(out["num_clusters"] or out_channels(out["backbone"]) // 4)
        out["temperature"] = float(out["temperature"])
    return out


def check_member_settings(model, values, source="the flags"):
    """Refuse a family member's setting (``--num_clusters`` ...) given a non-default value for another model."""
    foreign = [k for k in MEMBER_KEYS if k not in MEMBER_DEFAULTS.get(model, {})
               and values.get(k, _member_default(k)) != _member_default(k)]
    if foreign:
        owner = next(m for m, d in MEMBER_DEFAULTS.items() if foreign[0] in d)
        raise UserError(f"{source}: --{foreign[0]} is a setting of --model {owner}, not of {model}: drop it "
                        f"or use --model {owner}")


def _member_default(key):
    return next(d[key] for d in MEMBER_DEFAULTS.values() if key in d)


def model_config(args):
    """The keyword arguments of :func:`danet.build_model` that the flags select (saved with checkpoints)."""
    check_member_settings(args.model, vars(args))
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
