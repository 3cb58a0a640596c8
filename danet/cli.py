"""What the command-line entry points share besides the parser: the model of ``--save_model``, which
flags were given, and the ``main`` of the tools built on the eval flags (predict, export)."""
import argparse
import logging
import sys

import numpy as np

from danet import build_model, convert, options, weights
from danet.engine.common import ARCH_KEYS, MEMBER_KEYS, arch, check_member_settings
from danet.errors import UserError
from danet.runtime import run_main

log = logging.getLogger("danet.cli")
# Accepted for the seed's command lines; eval always loads --save_model.
IMPLIED = ("load_better_model", "load_pretrained_model")


def tool_main(build_parser, run, argv=None, check=None, extra=()):
    """``main`` of a tool built on the eval flags (danet-predict, danet-export).

    ``check(parser, args)`` validates the tool's own flags (call ``parser.error`` to refuse); ``extra``
    names flags whose explicit use matters to ``run`` (``args.explicit``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.entry = "eval"
    options._check(parser, args)
    if check is not None:
        check(parser, args)
    args.explicit = explicit_flags(build_parser(), argv, extra=extra)
    return run_main(run, args)


def training_flag_defaults():
    """{dest: default} of the training flags, which eval accepts (hidden) and ignores."""
    parser = argparse.ArgumentParser(add_help=False)
    options._train_flags(parser, hidden=True)
    return vars(parser.parse_args([]))


def explicit_flags(parser, argv, extra=()):
    """{dest: value} of the model, training and ``extra`` flags given in ``argv`` (``parser`` is changed)."""
    known = {a.dest for a in parser._actions}
    dests = [d for d in ARCH_KEYS + MEMBER_KEYS + tuple(training_flag_defaults()) + tuple(extra) if d in known]
    values = vars(parser.parse_known_args(argv)[0])
    given = options.given(parser, argv, dests)
    return {d: values[d] for d in dests if d in given}


def warn_ignored(explicit):
    defaults = training_flag_defaults()
    ignored = [f"--{d} {v}" for d, v in explicit.items() if d in defaults and d not in IMPLIED and v != defaults[d]]
    if ignored:
        log.warning("ignored by eval (training flags): %s", ", ".join(ignored))


def _describe(config, keys=()):
    grid = f"multi-grid {config['multi_dilation']}" if config["multi_grid"] else "no multi-grid"
    variants = "".join(f", --{k} {config[k]}" for k in keys)
    return (f"--backbone {config['backbone']}, --num_classes {config['num_classes']}, "
            f"{'dilated' if config['dilated'] else 'not dilated'}, {grid}{variants}")


def resolve_config(args, saved, source):
    """The model config: the checkpoint's own where it has it (flags given must agree), else the flags'.

    ``saved`` is the checkpoint's config, or what its tensors show (depth, classes) when it has none.
    """
    flags = arch(vars(args))
    if not saved:
        check_member_settings(flags["model"], vars(args))
        return flags
    saved = arch(dict(vars(args), **{k: saved[k] for k in ARCH_KEYS + MEMBER_KEYS if k in saved}))
    check_member_settings(saved["model"], {k: v for k, v in vars(args).items() if k in args.explicit}, source)
    flags = dict(arch(dict(vars(args), model=saved["model"])), model=args.model)  # member settings comparable
    relevant = [k for k in saved if k != "multi_dilation" or saved["multi_grid"] or flags["multi_grid"]]
    clash = [k for k in relevant
             if k in args.explicit and list(np.atleast_1d(flags[k])) != list(np.atleast_1d(saved[k]))]
    if clash:
        variants = [k for k in clash if k not in ("backbone", "num_classes", "dilated", "multi_grid", "multi_dilation")]
        raise UserError(f"{source} holds a model with {_describe(saved, variants)}, but the flags ask for "
                        f"{_describe(flags, variants)}: drop the model flags (the checkpoint has them) or choose "
                        "another checkpoint")
    return saved


def model_from_args(args):
    """The eval-mode model of ``--save_model``, strictly loaded; returns (model, weights.Weights, config).

    With ``--change_executor_to_dygraph`` an Executor checkpoint is converted on disk beside itself first.
    """
    if not args.save_model:
        raise UserError("no checkpoint: give --save_model PATH (a checkpoint or run directory, or a .pdparams file)")
    source = weights.read_weights(args.save_model, arch(vars(args)))
    config = resolve_config(args, source.config or weights.infer_config(source.tensors), source.path)
    how = f"{source.format} format"
    if args.change_executor_to_dygraph and source.format == "executor":
        dst = convert.convert_beside(args.save_model, dict(source.config or {}, **config), source)
        log.info("converted the Executor checkpoint to %s; evaluating that", dst)
        source = weights.read_weights(dst)
        how = f"{source.format} format"
    elif args.change_executor_to_dygraph:
        log.warning("--change_executor_to_dygraph: %s is already a dygraph checkpoint; evaluating it as it is",
                    source.path)
    elif source.format == "executor":
        how = "executor format, converted in memory"
    model = build_model(**config)
    model.eval()
    weights.load_into(model, None, strict=True, weights=source, how=how)
    return model, source, config
