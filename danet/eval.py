"""Evaluate DANet on a list split: ``python -m danet.eval --save_model CKPT --data_folder DIR``.

The checkpoint may be in either format: an Executor checkpoint is converted in memory (through its
``names.json``), or on disk first with ``--change_executor_to_dygraph``. The model settings come
from the checkpoint's ``state.json`` when it has one; model flags given on the command line must
agree with it. ``--pred_dir`` evaluates saved train-id PNGs instead of running a model.

Writes to ``--output_dir`` (default ``output/eval``): ``eval.log``, ``metrics.json`` (metrics, the
confusion matrix, the run's settings), ``per_class_iou.csv`` and, with ``--save_predictions``,
``trainid/``, ``color/`` and ``labelid/`` PNGs named after each image's path in the list.
"""
import argparse
import json
import logging
import os
import sys
import time

import cv2
import numpy as np

from danet import build_model, convert, options
from danet.data.cityscapes import CLASS_NAMES, TRAIN_ID_TO_LABEL_ID, SegDataset, colorize
from danet.data.transforms import build_val_transform
from danet.engine.loop import class_names
from danet.errors import UserError
from danet.inference import MULTI_SCALES, dygraph_predict_fn, evaluate
from danet.metrics import ConfusionMatrix, format_table, to_json_dict, write_csv
from danet.runtime import run_main, seed_everything, setup_device, setup_logging

log = logging.getLogger("danet.eval")  # not __name__: that is "__main__" under python -m
DEFAULT_OUTPUT = os.path.join("output", "eval")
# Accepted for the seed's command lines; eval always loads --save_model.
_IMPLIED = ("load_better_model", "load_pretrained_model")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = options.parse("eval", argv)
    args.explicit = explicit_flags(options.build_parser("eval"), argv)
    return run_main(run, args)


def tool_main(build_parser, run, argv=None, check=None, extra=()):
    """``main`` of a tool built on the eval flags (tools/predict.py, tools/export.py).

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
    options._train_flags(parser)
    return vars(parser.parse_args([]))


def explicit_flags(parser, argv, extra=()):
    """{dest: value} of the model, training and ``extra`` flags given in ``argv`` (``parser`` is changed)."""
    dests = list(convert.ARCH_KEYS) + list(training_flag_defaults()) + list(extra)
    absent = object()  # a default no flag can produce
    parser.set_defaults(**{d: absent for d in dests})
    given = vars(parser.parse_known_args(argv)[0])
    return {d: given[d] for d in dests if given[d] is not absent}


def _warn_ignored(explicit):
    defaults = training_flag_defaults()
    ignored = [f"--{d} {v}" for d, v in explicit.items() if d in defaults and d not in _IMPLIED and v != defaults[d]]
    if ignored:
        log.warning("ignored by eval (training flags): %s", ", ".join(ignored))


def _describe(config):
    grid = f"multi-grid {config['multi_dilation']}" if config["multi_grid"] else "no multi-grid"
    return (f"--backbone {config['backbone']}, --num_classes {config['num_classes']}, "
            f"{'dilated' if config['dilated'] else 'not dilated'}, {grid}")


def resolve_config(args, explicit, saved, source):
    """The model config: the checkpoint's own when it has one (flags given must agree), else the flags'."""
    flags = convert.arch(vars(args))
    if not saved:
        return flags
    saved = dict(flags, **{k: saved[k] for k in convert.ARCH_KEYS if k in saved})
    relevant = [k for k in convert.ARCH_KEYS if k != "multi_dilation" or saved["multi_grid"] or flags["multi_grid"]]
    clash = [k for k in relevant if k in explicit and list(np.atleast_1d(flags[k])) != list(np.atleast_1d(saved[k]))]
    if clash:
        raise UserError(f"{source} holds a model with {_describe(saved)}, but the flags ask for {_describe(flags)}: "
                        "drop the model flags (the checkpoint's state.json has them) or choose another checkpoint")
    return saved


def load_model(args, explicit):
    """Build the model of ``--save_model`` and load it strictly; returns (eval-mode model, info, config)."""
    if not args.save_model:
        raise UserError("no checkpoint: give --save_model PATH (a checkpoint or run directory, or a .pdparams file)")
    source = convert.read_checkpoint(args.save_model, convert.arch(vars(args)))
    found, info = source
    config = resolve_config(args, explicit, info.get("config"), info["path"])
    how = f"{info['format']} format"
    if args.change_executor_to_dygraph and info["format"] == "executor":
        dst = convert.convert_beside(args.save_model, dict(info.get("config") or {}, **config), source)
        log.info("converted the Executor checkpoint to %s; evaluating that", dst)
        found, info = convert.read_checkpoint(dst)
        how = f"{info['format']} format"
    elif args.change_executor_to_dygraph:
        log.warning("--change_executor_to_dygraph: %s is already a dygraph checkpoint; evaluating it as it is",
                    info["path"])
    elif info["format"] == "executor":
        how = "executor format, converted in memory"
    model = build_model(**config)
    model.eval()
    state = model.state_dict()
    convert.check_tensors({k: v.shape for k, v in state.items()}, found, info["path"])
    model.set_state_dict({k: found[k] for k in state})
    log.info("loaded %d of %d tensors from %s (%s)", len(state), len(state), info["path"], how)
    return model, info, config


def prediction_name(rel_path):
    """File name of an image's prediction: its list path with the extension ``.png``."""
    return os.path.splitext(rel_path)[0] + ".png"


class PredictionWriter:
    """``on_prediction`` callback: writes trainid/, color/ and (19 Cityscapes classes) labelid/ PNGs."""

    def __init__(self, output_dir, dataset, num_classes):
        self.output_dir, self.dataset = output_dir, dataset
        self.kinds = ["trainid", "color"] + (["labelid"] if num_classes == len(CLASS_NAMES) else [])
        if "labelid" not in self.kinds:
            log.warning("%d classes are not the 19 Cityscapes train ids: no labelid/ PNGs are written", num_classes)

    def __call__(self, index, pred, label=None):
        name = prediction_name(self.dataset.rel_path(index))
        images = {"trainid": pred, "color": cv2.cvtColor(colorize(pred), cv2.COLOR_RGB2BGR),
                  "labelid": TRAIN_ID_TO_LABEL_ID[pred]}
        for kind in self.kinds:
            path = os.path.join(self.output_dir, kind, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not cv2.imwrite(path, images[kind]):
                raise UserError(f"cannot write {path}: check that --output_dir is writable and the disk not full")


def evaluate_saved(pred_dir, dataset, num_classes, limit=None, on_prediction=None):
    """ConfusionMatrix of the train-id PNGs in ``pred_dir`` (one per image, at its list path) against the labels."""
    matrix = ConfusionMatrix(num_classes)
    count = len(dataset) if not limit else min(limit, len(dataset))
    for index in range(count):
        _, label = dataset.read(index)
        path = os.path.join(pred_dir, prediction_name(dataset.rel_path(index)))
        pred = cv2.imread(path, cv2.IMREAD_UNCHANGED) if os.path.isfile(path) else None
        if pred is None:
            raise UserError(f"prediction {path} for image {dataset.image_paths[index]} is missing or unreadable: "
                            "--pred_dir must hold a train-id PNG at each image's list path")
        if pred.ndim != 2:
            raise UserError(f"prediction {path} has {pred.shape[2]} channels: predictions are single-channel "
                            "train-id PNGs (e.g. the trainid/ folder of --save_predictions)")
        if pred.shape != label.shape:
            raise UserError(f"prediction {path} is {pred.shape[1]}x{pred.shape[0]} but its image "
                            f"{dataset.image_paths[index]} is {label.shape[1]}x{label.shape[0]}")
        try:
            matrix.update(pred, label)
        except ValueError as err:
            raise UserError(f"prediction {path}: {err}") from None
        if on_prediction is not None:
            on_prediction(index, pred, label)
    log.info("evaluated %d saved predictions from %s", count, pred_dir)
    return matrix


def report(matrix, output_dir, settings):
    """Log the table and write metrics.json and per_class_iou.csv; returns the metrics.json content."""
    result = matrix.summary()
    names = class_names(matrix.num_classes)
    log.info("%s split, %d images, scales %s%s:\n%s", settings["split"], settings["images"], settings["scales"],
             ", flip" if settings["flip"] else "", format_table(result, names))
    metrics = dict(to_json_dict(result, names), settings=settings)
    path = os.path.join(output_dir, "metrics.json")
    with open(path + ".tmp", "w") as f:
        json.dump(metrics, f, indent=1)
    os.replace(path + ".tmp", path)
    write_csv(os.path.join(output_dir, "per_class_iou.csv"), result, names)
    log.info("mIoU %.4f; wrote %s", result["miou"], path)
    return metrics


def _output_dir(args):
    folder = args.output_dir or DEFAULT_OUTPUT
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output_dir {folder} cannot be created ({e.strerror}): choose another folder") from None
    return folder


def run(args):
    if args.limit < 0 or args.window_batch < 1:
        raise UserError(f"--limit must be >= 0 and --window_batch >= 1, got {args.limit} and {args.window_batch}")
    if not args.save_model and not args.pred_dir:
        raise UserError("nothing to evaluate: give --save_model PATH (a checkpoint or run directory, or a .pdparams "
                        "file), or --pred_dir DIR of saved train-id PNGs")
    output_dir = _output_dir(args)
    setup_logging(os.path.join(args.log_root or output_dir, "eval.log"))
    _warn_ignored(args.explicit)
    device = setup_device(args.cuda, args.threads)
    seed_everything(args.seed)
    scales = tuple(args.scales or (MULTI_SCALES if args.multi_scales else (1.0,)))
    settings = dict(split=args.split, data_folder=os.path.abspath(args.data_folder), dataset=args.dataset,
                    base_size=args.base_size, crop_size=args.crop_size, scales=list(scales), flip=args.flip,
                    stride_rate=args.stride_rate, limit=args.limit, device=device)
    if args.pred_dir:
        settings.update(pred_dir=os.path.abspath(args.pred_dir), num_classes=args.num_classes)
    else:
        model, info, config = load_model(args, args.explicit)
        args.num_classes = config["num_classes"]
        settings.update(checkpoint=os.path.abspath(info["path"]), checkpoint_format=info["format"], model=config)
    dataset = SegDataset(args.data_folder, args.split, args.dataset, build_val_transform(), args.num_classes)
    writer = PredictionWriter(output_dir, dataset, args.num_classes) if args.save_predictions else None
    start = time.time()
    if args.pred_dir:
        matrix = evaluate_saved(args.pred_dir, dataset, args.num_classes, args.limit, writer)
    else:
        predict_fn = dygraph_predict_fn(model, args.window_batch)
        matrix = evaluate(predict_fn, dataset, args.num_classes, base_size=args.base_size, crop_size=args.crop_size,
                          scales=scales, flip=args.flip, stride_rate=args.stride_rate, window_batch=args.window_batch,
                          on_prediction=writer, progress=sys.stderr.isatty(), limit=args.limit or None)
    settings.update(images=min(len(dataset), args.limit or len(dataset)), seconds=round(time.time() - start, 2))
    if writer is not None:
        log.info("wrote %s PNGs under %s", "/, ".join(writer.kinds) + "/", output_dir)
    return report(matrix, output_dir, settings)


if __name__ == "__main__":
    main()
