"""Export a trained DANet checkpoint for Paddle Inference (``paddle.jit.save``) or as ONNX (paddle2onnx).

    danet-export --save_model checkpoint/dygraph_resnet101 --output output/export/danet
    danet-export --save_model checkpoint/dygraph_resnet101 --output output/export/danet --format onnx

The input is ``image``: float32 ``[batch, 3, height, width]`` (any batch and size), normalised as the
model was trained (ImageNet mean and std on RGB/255 unless the checkpoint says otherwise: an imported
PaddleSeg model uses mean = std = 0.5); the output is the fused logits
``[batch, num_classes, height, width]`` (take the argmax over axis 1). ``<output>_deploy.json`` describes the
export: the normalisation (mean and std on 0..255), the classes and colours, the model and how to predict.

``--format paddle`` (default): Paddle 3.x writes ``<output>.json`` + ``<output>.pdiparams``, Paddle 2.6
``<output>.pdmodel`` + ``<output>.pdiparams``. The export is loaded back with ``paddle.jit.load`` and run by
Paddle Inference predictors, and both are checked against the dygraph model on a random input.

``--format onnx``: ``<output>.onnx`` through paddle2onnx (``pip install 'danet-paddle[onnx]'``; on Paddle 2.6
``'danet-paddle[onnx-paddle26]'``), opset ``--opset`` (11 to 21; 19 with Paddle 2.6's paddle2onnx 1.3.1).
onnxruntime runs it on the CPU on two random inputs of different batch and size; its logits must be the
model's to 1e-4 of the largest. DRANet converts only at a fixed input size: give ``--input_size H W``.
On any failure one line says why and nothing is written.
Any checkpoint format ``python -m danet.eval`` reads works here.
"""
import os

import danet.quiet  # noqa: F401  (Paddle's C++ log level: before Paddle loads)
from danet import options
from danet.cli import model_from_args, tool_main
from danet.runtime import setup_device, setup_logging


def build_parser():
    parser = options.build_parser("export")  # the shared model and checkpoint flags
    parser.prog, parser.description = "danet-export", __doc__.splitlines()[0]
    parser.add_argument("--output", default=os.path.join("output", "export", "danet"), metavar="PREFIX",
                        help="path prefix of the exported files (default: %(default)s)")
    parser.add_argument("--format", choices=["paddle", "onnx"], default="paddle",
                        help="paddle: a Paddle Inference program and weights; onnx: PREFIX.onnx through "
                             "paddle2onnx, checked in onnxruntime (default: %(default)s)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset, 11 to 21 (19 with Paddle 2.6) (--format onnx; default: 11)")
    parser.add_argument("--input_size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="fix the ONNX input's height and width (--format onnx; needed for DRANet, whose "
                             "adaptive pooling paddle2onnx converts only at a fixed size; default: any size)")
    parser.add_argument("--check_size", type=int, nargs=2, default=[64, 96], metavar=("H", "W"),
                        help="size of the random image the export is checked on (default: 64 96)")
    return parser


def run(args):
    from danet.deploy.description import build_description

    setup_logging()
    setup_device(args.cuda, args.threads)
    model, source, _ = model_from_args(args)
    description = build_description(model, source)
    check_shape = (1, 3) + tuple(args.check_size)
    if args.format == "onnx":
        return _export_onnx(args, model, source, description, check_shape)
    from danet.deploy import export_model

    report = export_model(model, args.output, check_shape, description=description)
    print(f"exported {source.path} to {', '.join(report['files'])}; logits differ from the model's by at most "
          f"{report['jit_diff']:.3g} (paddle.jit.load) and {report['inference_diff']:.3g} (Paddle Inference)")
    return report


def _export_onnx(args, model, source, description, check_shape):
    from danet.deploy.onnx import DEFAULT_OPSET, export_onnx

    path = args.output if args.output.endswith(".onnx") else args.output + ".onnx"
    report = export_onnx(model, path, opset=args.opset or DEFAULT_OPSET, check_shape=check_shape,
                         input_size=args.input_size, description=description)
    shapes = ", ".join("x".join(map(str, c["shape"])) for c in report["checks"])
    print(f"exported {source.path} to {', '.join(report['files'])} (ONNX opset {report['opset']}, paddle2onnx "
          f"{report['paddle2onnx']}); onnxruntime's logits differ from the model's by at most "
          f"{max(c['relative'] for c in report['checks']):.3g} of the largest ({shapes})")
    return report


def _check(parser, args):
    if min(args.check_size) < 8:
        parser.error(f"--check_size must be at least 8 8, got {args.check_size}")
    if args.format != "onnx" and (args.opset is not None or args.input_size is not None):
        parser.error("--opset and --input_size apply to --format onnx only")
    if args.opset is not None and not 11 <= args.opset <= 21:
        parser.error(f"--opset must be 11 to 21, got {args.opset} (below 11 the bilinear upsampling has no ONNX "
                     "form)")
    if args.input_size is not None and min(args.input_size) < 16:
        parser.error(f"--input_size must be at least 16 16, got {args.input_size}")


def main(argv=None):
    return tool_main(build_parser, run, argv, check=_check)


def console():
    """The console script: exit status 0 on success (``main`` returns its result to callers in Python)."""
    main()


if __name__ == "__main__":
    console()
