"""Segment images with a trained DANet checkpoint: colour masks, overlays and train-id PNGs.

    danet-predict --save_model checkpoint/dygraph_resnet101 photos/ street.jpg --output_dir out
    danet-predict --save_model ckpt img.png --base_size 2048 --crop_size 1024 --scales 0.75 1.0 1.25 --flip

Writes ``color/<name>.png`` (Cityscapes palette), ``overlay/<name>.png`` (mask blended over the image
with --alpha), ``side_by_side/<name>.png`` (image | mask | overlay) and ``trainid/<name>.png`` under
--output_dir (default output/predict); names keep the path below a folder input. Images are run at
their own size unless --base_size (the long side at scale 1.0) is given; larger than --crop_size they
are run by sliding windows. Any checkpoint format ``python -m danet.eval`` reads works here.
"""
import os

from danet import options
from danet.cli import model_from_args, tool_main
from danet.deploy import predict_images
from danet.runtime import setup_device, setup_logging

DEFAULT_OUTPUT = os.path.join("output", "predict")


def build_parser():
    parser = options.build_parser("predict")  # the shared flags: model, checkpoint, sizes, scales, flip, windows
    parser.prog, parser.description = "danet-predict", __doc__.splitlines()[0]
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity in the overlays (default: 0.5)")
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT, help="where the pictures go (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=0, help="the first N images only, 0 = all (default: 0)")
    return parser


def run(args):
    setup_logging()
    setup_device(args.cuda, args.threads)
    model, source, config = model_from_args(args)
    base_size = args.base_size if "base_size" in args.explicit else None
    written = predict_images(model, config["num_classes"], args.inputs, args.output_dir,
                             base_size=base_size, crop_size=args.crop_size, scales=args.scales,
                             multi_scales=args.multi_scales, flip=args.flip, stride_rate=args.stride_rate,
                             window_batch=args.window_batch, alpha=args.alpha, limit=args.limit,
                             palette=checkpoint_palette(source, config["num_classes"]))
    print(f"wrote {len(written)} files under {args.output_dir} "
          "(color/, overlay/, trainid/, side_by_side/)")
    return written


def checkpoint_palette(source, num_classes):
    """The colours of the checkpoint's data set (saved with it), else Cityscapes' (up to 19 classes), else fixed."""
    from danet.data.presets import CITYSCAPES_PALETTE, palette_for

    saved = ((source.state or {}).get("dataset") or {}).get("palette")
    if not saved and source.imported is not None:
        saved = source.imported.meta.get("palette")
    if saved and len(saved) == num_classes:
        return saved
    return CITYSCAPES_PALETTE if num_classes <= len(CITYSCAPES_PALETTE) else palette_for(num_classes)


def _check(parser, args):
    if not 0 <= args.alpha <= 1:
        parser.error(f"--alpha must be in [0, 1], got {args.alpha}")


def main(argv=None):
    return tool_main(build_parser, run, argv, check=_check, extra=("base_size",))


def console():
    """The console script: exit status 0 on success (``main`` returns its result to callers in Python)."""
    main()


if __name__ == "__main__":
    console()
