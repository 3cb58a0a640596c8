"""Convert a DANet checkpoint between the graph modes (Executor <-> dygraph), proved on a random input.

    danet-convert checkpoint/executor_resnet101/epoch_0350 converted/dygraph_epoch_0350
    danet-convert checkpoint/dygraph_resnet101/best converted/executor_best
    danet-convert checkpoint/executor_resnet101/epoch_0350 model.pdparams --to dygraph

The direction is read from SRC's format (``--to`` forces it). DST is a checkpoint directory (an
Executor one holds model.pdparams keyed by program names, names.json and state.json, accepted by
``danet.train_executor --resume/--pretrained``) or, for dygraph, a lone ``.pdparams`` file. A source
without state.json needs the model flags it was trained with. Nothing is written unless every
tensor matches and the converted model's logits equal the source's (<= 1e-5).
"""
import argparse
import sys

import danet.quiet  # noqa: F401  (Paddle's C++ log level: before Paddle loads)
from danet import convert, options, weights
from danet.cli import explicit_flags, resolve_config
from danet.engine.common import arch
from danet.runtime import run_main, setup_device, setup_logging


def build_parser():
    parser = argparse.ArgumentParser(prog="danet-convert", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="checkpoint to convert (a checkpoint or run directory, or a .pdparams file)")
    parser.add_argument("dst", help="where to write: a directory, or a .pdparams file for --to dygraph")
    parser.add_argument("--to", choices=convert.FORMATS, default=None,
                        help="target format (default: the other one than SRC's)")
    parser.add_argument("--replace", action="store_true", help="overwrite DST if it exists")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    options._model_flags(parser)  # the shared model flags: only needed when SRC has no state.json
    return parser


def run(args):
    setup_logging()
    setup_device(cuda=False)
    source = weights.read_weights(args.src, arch(vars(args)))
    config = resolve_config(args, source.config or weights.infer_config(source.tensors), source.path)
    report = convert.convert(args.src, args.dst, to=args.to, config=config, replace=args.replace, source=source)
    print(f"converted {report['source']} ({report['source_format']}) -> {report['destination']} ({report['format']}):"
          f" {report['tensors']} tensors and {report['optimizer_tensors']} optimizer tensors, logits equal to "
          f"{report['max_abs_diff']:.3g} on a random input")
    return report


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.explicit = explicit_flags(build_parser(), argv)
    return run_main(run, args)


def console():
    """The console script: exit status 0 on success (``main`` returns its result to callers in Python)."""
    main()


if __name__ == "__main__":
    console()
