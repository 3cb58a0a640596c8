"""The one argument parser of every entry point, so flags cannot drift between them.

The seed port's flags keep their names and meaning; ``--dilated`` is on by default (the seed
silently trained at output stride 32 when it was forgotten) and ``--no-dilated`` turns it off.
Training-only flags are accepted by ``eval`` for old command lines and reported as ignored.
Each entry point gets only the groups of flags it acts on (see :data:`GROUPS`).
"""
import argparse
import os

from danet.models.resnet import DEPTHS

SEED_LR_PER_IMAGE = 0.003 / 8  # the seed's default LR is 0.003 for a batch of 8
SEED_CHECKPOINT = "checkpoint/DANet101_better_model_paddle1.6"


def _model_flags(p):
    g = p.add_argument_group("model")
    g.add_argument("--model", default="danet", choices=["danet", "dranet", "clusterdanet"],
                   help="DANet (default), DRANet (compact attention, gating decoder) or ClusterDANet (experimental)")
    g.add_argument("--backbone", default="resnet101", choices=list(DEPTHS), help="ResNet depth (default: %(default)s)")
    g.add_argument("--num_classes", type=int, default=19, help="number of classes (default: %(default)s)")
    g.add_argument("--dilated", action="store_true", default=True,
                   help="dilated backbone, output stride 8 (the default; kept for the seed's command lines)")
    g.add_argument("--no-dilated", dest="dilated", action="store_false", help="plain backbone, output stride 32")
    g.add_argument("--multi_grid", action="store_true", help="layer4 blocks use the dilations of --multi_dilation")
    g.add_argument("--multi_dilation", type=int, nargs="+", default=[4, 8, 16], metavar="D",
                   help="layer4 per-block dilations with --multi_grid (default: 4 8 16)")
    g.add_argument("--num_clusters", type=int, default=None, metavar="K",
                   help="--model clusterdanet: clusters per attention branch (default: the head's width, 512 on "
                        "ResNet-50/101)")
    g.add_argument("--temperature", type=float, default=100.0, metavar="T",
                   help="--model clusterdanet: sharpness of the soft cluster assignments (default: %(default)s)")
    v = p.add_argument_group("model variants (for the released weights of other implementations; an imported "
                             "checkpoint carries its own)")
    v.add_argument("--output_stride", type=int, choices=[8, 16, 32], default=None,
                   help="8 (the default with --dilated), 16 (layer3 strided), 32 (= --no-dilated)")
    v.add_argument("--stem", choices=["7x7", "deep32", "deep64"], default="7x7",
                   help="one 7x7 conv (default), three 3x3 convs 32/32/64 (mmseg, PaddleSeg, sssegmentation) or "
                        "64/64/128 (the official repository's deep stem)")
    v.add_argument("--avg_down", action="store_true", help="ResNet-D shortcuts: average pool, then a 1x1 conv")
    v.add_argument("--no-halve_first_dilation", dest="halve_first_dilation", action="store_false",
                   help="every block of a dilated stage uses its full dilation (PaddleSeg); by default the first "
                        "block uses half")
    v.add_argument("--no-align_corners", dest="align_corners", action="store_false",
                   help="upsample the logits with half-pixel centres (mmseg 512x1024, sssegmentation, PaddleSeg) "
                        "instead of aligned corners")
    v.add_argument("--align_mode", type=int, choices=[0, 1], default=0,
                   help="with --no-align_corners: 0 half-pixel (PyTorch's), 1 asymmetric (PaddleSeg's)")
    v.add_argument("--aux_head", action="store_true",
                   help="an auxiliary FCN head on layer3 trained alongside (its loss weight: --aux_weight)")
    v.add_argument("--aux_channels", type=int, default=256, help="channels of the auxiliary head (default: 256)")
    v.add_argument("--input_norm", choices=["imagenet", "half"], default="imagenet",
                   help="input normalisation: ImageNet mean/std (default) or mean = std = 0.5 (PaddleSeg)")
    return g


def _data_flags(p, sizes_only=False):
    g = p.add_argument_group("data")
    if not sizes_only:
        g.add_argument("--data_folder", default="./dataset", help="root of the data sets (default: %(default)s)")
        g.add_argument("--dataset", default="cityscapes",
                       help="a preset (cityscapes, ade20k, voc, pascal_context, pascal_context_60, coco_stuff: its "
                            "classes, label convention and sizes) or a folder of your own with classes.txt; the data "
                            "are read from --data_folder/NAME (default: %(default)s)")
    g.add_argument("--base_size", type=int, default=1024,
                   help="train: short side before random scaling; eval: long side at scale 1.0 (default: %(default)s)")
    g.add_argument("--crop_size", type=int, default=768, help="training crop / sliding window (default: %(default)s)")
    if not sizes_only:
        g.add_argument("--num_workers", type=int, default=2, help="processes that read and transform images ahead "
                       "of the model, 0 = none (default: %(default)s)")
    return g


def _runtime_flags(p, logs=True):
    g = p.add_argument_group("runtime")
    g.add_argument("--cuda", action="store_true", help="run on the GPU (default: CPU)")
    g.add_argument("--threads", type=int, default=0,
                   help="CPU math threads; 0 = all cores of this machine (default: %(default)s)")
    if logs:
        g.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
        g.add_argument("--log_root", default=None, help="folder for the log file (default: --save_dir or --output_dir)")
    g.add_argument("--save_model", default=SEED_CHECKPOINT,
                   help="the checkpoint that eval and --load_pretrained_model / --load_better_model read "
                        "(a checkpoint or run folder, or a .pdparams file; default: %(default)s)")
    g.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    return g


def _train_flags(p, hidden=False):
    def h(text):
        return argparse.SUPPRESS if hidden else text

    g = p.add_argument_group("training")
    g.add_argument("--epoch_num", type=int, default=350, help=h("epochs (default: %(default)s)"))
    g.add_argument("--batch_size", type=int, default=2, help=h("images per device and step (default: %(default)s)"))
    g.add_argument("--lr", type=float, default=None,
                   help=h("base LR of the backbone; the head uses 10x (default: 0.003/8 * batch_size)"))
    g.add_argument("--lr_scheduler", default="poly", help=h("poly, cosine or piecewise (default: %(default)s)"))
    g.add_argument("--lr_pow", type=float, default=0.9, help=h("power of the poly schedule (default: %(default)s)"))
    g.add_argument("--warm_up", action="store_true", help=h("linear warm-up from 0 over --warmup_epoch epochs"))
    g.add_argument("--warmup_epoch", type=int, default=5, help=h("warm-up length in epochs (default: %(default)s)"))
    g.add_argument("--step_per_epoch", type=int, default=None,
                   help=h("iterations per epoch for the LR schedule (default: from the data loader)"))
    g.add_argument("--momentum", type=float, default=0.9, help=h("momentum (default: %(default)s)"))
    g.add_argument("--weight_decay", type=float, default=1e-4, help=h("L2 weight decay (default: %(default)s)"))
    g.add_argument("--scale", action="store_true", help=h("random scale 0.75-2.0x of --base_size in training"))
    g.add_argument("--use_data_parallel", action="store_true",
                   help=h("data parallel over the devices of paddle.distributed.launch"))
    g.add_argument("--save_dir", default=None, help=h("where this run writes (default: checkpoint/<mode>_<backbone>)"))
    g.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH",
                   help=h("continue a run: alone, from the latest checkpoint in --save_dir; or from PATH"))
    g.add_argument("--pretrained", default=None, metavar="PATH", help=h("initial weights (a checkpoint or .pdparams)"))
    g.add_argument("--load_pretrained_model", action="store_true",
                   help=h("seed flag: initial weights from --save_model"))
    g.add_argument("--load_better_model", action="store_true", help=h("seed flag: same as --load_pretrained_model"))
    g.add_argument("--eval_interval", type=int, default=5, help=h("validate every N epochs, 0 = never (default: 5)"))
    g.add_argument("--save_interval", type=int, default=5, help=h("checkpoint every N epochs (default: %(default)s)"))
    g.add_argument("--keep_checkpoints", type=int, default=3, help=h("periodic checkpoints kept (default: 3)"))
    g.add_argument("--log_iters", type=int, default=20, help=h("log every N iterations (default: %(default)s)"))
    g.add_argument("--use_vdl", action="store_true", help=h("write VisualDL scalars under --save_dir"))
    g.add_argument("--amp", action="store_true", help=h("mixed precision O1 on the GPU (attention stays fp32)"))
    g.add_argument("--val_limit", type=int, default=0, help=h("validate on the first N images only, 0 = all"))
    g.add_argument("--aux_weight", type=float, default=0.4,
                   help=h("loss weight of the --aux_head output (default: 0.4, as mmseg and sssegmentation)"))
    if not hidden:  # a memory setting of the backward pass: nothing to accept in eval
        g.add_argument("--recompute", action="store_true",
                       help="recompute position attention in chunks in the backward pass (less memory, ~13%% slower)")
    return g


def _predict_flags(p):
    """How a model predicts: in danet.eval, tools/predict.py, and the validation during training."""
    g = p.add_argument_group("prediction (in training: the validation after every --eval_interval epochs)")
    g.add_argument("--multi_scales", action="store_true",
                   help="scales 0.5 0.75 1.0 1.25 1.35 1.5 1.75 2.0 2.2 (the seed's), else 1.0")
    g.add_argument("--scales", type=float, nargs="+", default=None, help="explicit list of scales")
    g.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    g.add_argument("--stride_rate", type=float, default=2 / 3, help="window stride / crop size (default: 2/3)")
    g.add_argument("--window_batch", type=int, default=2, help="sliding windows per forward pass (default: 2)")
    return g


def _eval_flags(p):
    g = p.add_argument_group("evaluation")
    g.add_argument("--split", default="val", help="list split to evaluate (default: %(default)s)")
    g.add_argument("--change_executor_to_dygraph", action="store_true",
                   help="convert the Executor checkpoint at --save_model to a dygraph one beside it first (seed "
                        "flag); without it an Executor checkpoint is converted in memory")
    g.add_argument("--output_dir", default=None, help="where metrics and predictions go (default: output/eval)")
    g.add_argument("--save_predictions", action="store_true", help="write train-id, colour and label-id PNGs")
    g.add_argument("--pred_dir", default=None, help="evaluate saved train-id PNGs instead of running a model")
    g.add_argument("--limit", type=int, default=0, help="evaluate the first N images only, 0 = all")
    return g


DESCRIPTIONS = {
    "train_executor": "Train DANet with the static graph (paddle.static.Executor).",
    "train_dygraph": "Train DANet in dygraph (imperative) mode.",
    "eval": "Evaluate DANet: per-class IoU by sliding window, single- or multi-scale, with flip.",
}


class _OneLineErrors(argparse.ArgumentParser):
    """A flag mistake is one line on stderr (argparse's default puts it under a 30-line usage text)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(entry):
    """``entry`` is 'train_executor', 'train_dygraph', 'eval', 'predict' or 'export'.

    Each gets the flags it acts on: the tools have no data-set, training or evaluation flags.
    """
    tool = entry in ("predict", "export")
    p = _OneLineErrors(prog=f"danet-{entry}" if tool else f"python -m danet.{entry}",
                       description=DESCRIPTIONS.get(entry))
    _model_flags(p)
    if entry != "export":
        _data_flags(p, sizes_only=tool)
    _runtime_flags(p, logs=not tool)
    if tool:
        p.add_argument("--change_executor_to_dygraph", action="store_true",
                       help="convert an Executor checkpoint at --save_model to a dygraph one beside it first")
        if entry == "predict":
            _predict_flags(p)
        return p
    _train_flags(p, hidden=entry == "eval")
    _predict_flags(p)
    if entry == "eval":
        _eval_flags(p)
    return p


def parse(entry, argv=None):
    """Parse and check the flags; a flag that cannot work gives ``parser.error`` (exit 2, one line).

    ``--dataset NAME`` brings the preset's classes and sizes for every such flag not given (``args.preset``).
    """
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(entry)
    args = parser.parse_args(argv)
    args.entry = entry
    _check(parser, args)
    apply_preset(parser, args, given(build_parser(entry), argv, ("num_classes", "base_size", "crop_size")))
    if args.lr is None:
        args.lr = SEED_LR_PER_IMAGE * args.batch_size
    if args.save_dir is None:
        args.save_dir = os.path.join("checkpoint", f"{entry.replace('train_', '')}_{args.backbone}")
    return args


def given(parser, argv, dests):
    """The subset of ``dests`` whose flags appear in ``argv`` (``parser`` is changed: use a fresh one)."""
    absent = object()  # a default no flag can produce
    parser.set_defaults(**{d: absent for d in dests})
    values = vars(parser.parse_known_args(argv)[0])
    return {d for d in dests if values.get(d, absent) is not absent}


def apply_preset(parser, args, explicit):
    """Resolve ``--dataset`` into ``args.preset`` and take its classes and sizes where no flag gave them."""
    from danet.data.presets import get_preset
    from danet.errors import UserError

    root = os.path.join(args.data_folder, args.dataset)
    try:
        preset = get_preset(args.dataset, root, args.num_classes if "num_classes" in explicit else None)
    except UserError as e:
        parser.error(str(e))
    if "num_classes" not in explicit:
        args.num_classes = preset.num_classes
    elif args.num_classes != preset.num_classes:
        parser.error(f"--num_classes {args.num_classes} contradicts --dataset {args.dataset} "
                     f"({preset.num_classes} classes): drop --num_classes")
    training = args.entry.startswith("train")
    if "base_size" not in explicit:
        args.base_size = preset.base_size if training else preset.eval_base_size  # 0: each image at its own size
    if "crop_size" not in explicit:
        args.crop_size = preset.crop_size
    args.preset = preset


def _check(parser, args):
    """Refuse flags that cannot work; flags an entry point does not have are skipped."""
    positive = ["num_classes", "base_size", "crop_size", "epoch_num", "batch_size", "save_interval", "log_iters"]
    for name in positive:
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if getattr(args, "crop_size", 16) < 16:
        parser.error(f"--crop_size {args.crop_size} is too small: DANet needs at least 16 pixels (stride 8)")
    if min(getattr(args, "num_workers", 0), args.threads, getattr(args, "eval_interval", 0)) < 0 \
            or getattr(args, "keep_checkpoints", 1) < 1:
        parser.error("--num_workers, --threads and --eval_interval must be >= 0, --keep_checkpoints >= 1")
    if getattr(args, "lr", None) is not None and args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if getattr(args, "lr_scheduler", "poly") not in ("poly", "cosine", "piecewise"):
        parser.error(f"unknown --lr_scheduler {args.lr_scheduler!r}: choose poly, cosine or piecewise")
    if args.output_stride in (8, 16) and not args.dilated:  # dilated is on unless --no-dilated was given
        parser.error(f"--no-dilated contradicts --output_stride {args.output_stride}: give one of them")
    if args.output_stride is not None:
        args.dilated = args.output_stride != 32
    if args.multi_grid and not args.dilated:
        parser.error("--multi_grid needs a dilated backbone: drop --no-dilated")
    if args.multi_grid:
        need = DEPTHS[args.backbone][1][3]
        if len(args.multi_dilation) != need or min(args.multi_dilation) < 1:
            parser.error(f"--multi_dilation needs {need} positive values for {args.backbone} "
                         f"(one per layer4 block), got {args.multi_dilation}")
    if (args.num_clusters is not None and args.num_clusters < 1) or args.temperature <= 0:
        parser.error(f"--num_clusters must be >= 1 and --temperature > 0, got {args.num_clusters} and "
                     f"{args.temperature}")
    if getattr(args, "stride_rate", 0.5) <= 0 or getattr(args, "stride_rate", 0.5) > 1:
        parser.error(f"--stride_rate must be in (0, 1], got {args.stride_rate}")
    if getattr(args, "window_batch", 1) < 1 or min(getattr(args, "scales", None) or [1]) <= 0:
        parser.error("--window_batch must be >= 1 and every --scales value positive")
