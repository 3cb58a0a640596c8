"""Segment images with a trained DANet checkpoint: colour masks, overlays and train-id PNGs.

    danet-predict --save_model checkpoint/dygraph_resnet101 photos/ street.jpg --output_dir out
    danet-predict --save_model ckpt img.png --base_size 2048 --crop_size 1024 --scales 0.75 1.0 1.25 --flip

Writes ``color/<name>.png`` (Cityscapes palette), ``overlay/<name>.png`` (mask blended over the image
with --alpha), ``side_by_side/<name>.png`` (image | mask | overlay) and ``trainid/<name>.png`` under
--output_dir (default output/predict); names keep the path below a folder input. Images are run at
their own size unless --base_size (the long side at scale 1.0) is given; larger than --crop_size they
are run by sliding windows. Any checkpoint format ``python -m danet.eval`` reads works here.

    danet-predict --inference_model output/export/danet photos/ --output_dir out
    danet-predict --inference_model output/export/ photos/ --no-onednn --threads 2 --flip

runs a danet-export export through Paddle Inference (CPU with oneDNN unless --no-onednn; --cuda for the
GPU, --tensorrt for TensorRT subgraphs there) instead of a checkpoint: its ``<prefix>_deploy.json`` gives the
normalisation, classes, colours, window, scales and flip (the flags given here override the last four).
"""
import logging
import os

import danet.quiet  # noqa: F401  (Paddle's C++ log level: before Paddle loads)
from danet import options
from danet.cli import model_from_args, tool_main
from danet.deploy import predict_images
from danet.deploy.description import SUFFIX, classes_and_palette
from danet.errors import UserError
from danet.runtime import setup_device, setup_logging

log = logging.getLogger("danet.predict")
DEFAULT_OUTPUT = os.path.join("output", "predict")
# The prediction flags an export's description supplies unless they are given on the command line.
SETTINGS = ("base_size", "crop_size", "stride_rate", "scales", "multi_scales", "flip", "window_batch")


def build_parser():
    parser = options.build_parser("predict")  # the shared flags: model, checkpoint, sizes, scales, flip, windows
    parser.prog, parser.description = "danet-predict", __doc__.splitlines()[0]
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity in the overlays (default: 0.5)")
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT, help="where the pictures go (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=0, help="the first N images only, 0 = all (default: 0)")
    g = parser.add_argument_group("Paddle Inference (an exported model instead of --save_model)")
    g.add_argument("--inference_model", default=None, metavar="PREFIX_OR_DIR",
                   help="a danet-export export (its prefix, a file of it or its folder), run by Paddle Inference")
    g.add_argument("--no-onednn", dest="onednn", action="store_false",
                   help="plain CPU kernels instead of oneDNN (with --inference_model)")
    g.add_argument("--tensorrt", action="store_true", help="TensorRT subgraphs on the GPU (with --inference_model "
                   "--cuda; needs a Paddle built with TensorRT)")
    return parser


def run(args):
    setup_logging()
    if args.inference_model:
        model, num_classes, palette, settings = _exported(args)
    else:
        setup_device(args.cuda, args.threads)
        model, source, config = model_from_args(args)
        num_classes = config["num_classes"]
        palette = classes_and_palette(source, num_classes)[1]
        settings = {k: getattr(args, k) for k in SETTINGS}
        settings["base_size"] = args.base_size if "base_size" in args.explicit else None
    written = predict_images(model, num_classes, args.inputs, args.output_dir, alpha=args.alpha, limit=args.limit,
                             palette=palette, **settings)
    print(f"wrote {len(written)} files under {args.output_dir} "
          "(color/, overlay/, trainid/, side_by_side/)")
    return written


def _exported(args):
    """(InferenceModel, num_classes, palette, prediction settings) of --inference_model: the description's
    settings, overridden by the prediction flags given."""
    from danet.deploy.inference import InferenceModel

    ignored = sorted(k for k in args.explicit if k not in SETTINGS)
    if ignored:
        log.warning("ignored with --inference_model (the export has its own model): %s",
                    ", ".join(f"--{k}" for k in ignored))
    model = InferenceModel(args.inference_model, device="gpu" if args.cuda else "cpu", onednn=args.onednn,
                           threads=args.threads, tensorrt=args.tensorrt)
    if model.description is None:
        raise UserError(f"{model.prefix} has no {model.prefix}{SUFFIX}, which says how to feed it: export it again "
                        "with danet-export")
    settings = dict(model.settings, multi_scales=False)
    settings.update((k, getattr(args, k)) for k in SETTINGS if k in args.explicit)
    if "multi_scales" in args.explicit and "scales" not in args.explicit:
        settings["scales"] = None  # --multi_scales asks for the nine scales: not the description's list
    log.info("predicting with %r: %s", model, ", ".join(f"{k} {v}" for k, v in settings.items()))
    return model, model.num_classes, model.palette, settings


def _check(parser, args):
    if not 0 <= args.alpha <= 1:
        parser.error(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.tensorrt and not (args.inference_model and args.cuda):
        parser.error("--tensorrt runs an --inference_model on the GPU: give it with --inference_model and --cuda")


def main(argv=None):
    return tool_main(build_parser, run, argv, check=_check, extra=SETTINGS)


def console():
    """The console script: exit status 0 on success (``main`` returns its result to callers in Python)."""
    main()


if __name__ == "__main__":
    console()
