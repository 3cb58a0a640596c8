"""Export a trained DANet checkpoint for Paddle Inference with ``paddle.jit.save``.

    danet-export --save_model checkpoint/dygraph_resnet101 --output output/export/danet

The input is ``image``: float32 ``[batch, 3, height, width]`` (any batch and size), normalised as the
model was trained (ImageNet mean and std on RGB/255 unless the checkpoint says otherwise: an imported
PaddleSeg model uses mean = std = 0.5); the output is the fused logits
``[batch, num_classes, height, width]`` (take the argmax over axis 1). Paddle 3.x writes
``<output>.json`` + ``<output>.pdiparams``, Paddle 2.6 ``<output>.pdmodel`` + ``<output>.pdiparams``;
``<output>_preprocess.json`` gives the normalisation (mean and std on 0..255) and the output.
The export is loaded back with ``paddle.jit.load`` and run by a Paddle Inference predictor, and
both are checked against the dygraph model on a random input. On a CPU with Paddle 3.3, create the
predictor with ``config.disable_mkldnn()``: its oneDNN executor rejects the bilinear resize.
Any checkpoint format ``python -m danet.eval`` reads works here.
"""
import os

from danet import options
from danet.cli import model_from_args, tool_main
from danet.deploy import export_model
from danet.runtime import setup_device, setup_logging


def build_parser():
    parser = options.build_parser("export")  # the shared model and checkpoint flags
    parser.prog, parser.description = "danet-export", __doc__.splitlines()[0]
    parser.add_argument("--output", default=os.path.join("output", "export", "danet"), metavar="PREFIX",
                        help="path prefix of the exported files (default: %(default)s)")
    parser.add_argument("--check_size", type=int, nargs=2, default=[64, 96], metavar=("H", "W"),
                        help="size of the random image the export is checked on (default: 64 96)")
    return parser


def run(args):
    setup_logging()
    setup_device(args.cuda, args.threads)
    model, source, _ = model_from_args(args)
    report = export_model(model, args.output, (1, 3) + tuple(args.check_size))
    print(f"exported {source.path} to {', '.join(report['files'])}; logits differ from the model's by at most "
          f"{report['jit_diff']:.3g} (paddle.jit.load) and {report['inference_diff']:.3g} (Paddle Inference)")
    return report


def _check(parser, args):
    if min(args.check_size) < 8:
        parser.error(f"--check_size must be at least 8 8, got {args.check_size}")


def main(argv=None):
    return tool_main(build_parser, run, argv, check=_check)


def console():
    """The console script: exit status 0 on success (``main`` returns its result to callers in Python)."""
    main()


if __name__ == "__main__":
    console()
