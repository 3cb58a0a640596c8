"""Evaluate DANet on a list split: ``python -m danet.eval --save_model CKPT --data_folder DIR``.

The checkpoint may be in either format: an Executor checkpoint is converted in memory (through its
``names.json``), or on disk first with ``--change_executor_to_dygraph``. The model settings come
from the checkpoint's ``state.json`` when it has one; model flags given on the command line must
agree with it. ``--pred_dir`` evaluates saved train-id PNGs instead of running a model.

Writes to ``--output_dir`` (default ``output/eval``): ``eval.log``, ``metrics.json`` (metrics, the
confusion matrix, the run's settings), ``per_class_iou.csv`` and, with ``--save_predictions``,
``trainid/``, ``color/`` and ``labelid/`` PNGs named after each image's path in the list.
"""
import dataclasses
import json
import logging
import os
import sys
import time

import cv2

import danet.quiet  # noqa: F401  (Paddle's C++ log level: before Paddle loads)
from danet import options
from danet.cli import explicit_flags, model_from_args, warn_ignored
from danet.data.cityscapes import CLASS_NAMES, TRAIN_ID_TO_LABEL_ID, SegDataset, colorize
from danet.data.transforms import build_val_transform
from danet.engine.loop import class_names
from danet.errors import UserError
from danet.inference import MULTI_SCALES, dygraph_predict_fn, evaluate
from danet.metrics import ConfusionMatrix, format_table, to_json_dict, write_csv
from danet.runtime import run_main, seed_everything, setup_device, setup_logging

log = logging.getLogger("danet.eval")  # not __name__: that is "__main__" under python -m
DEFAULT_OUTPUT = os.path.join("output", "eval")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = options.parse("eval", argv)
    args.explicit = explicit_flags(options.build_parser("eval"), argv)
    return run_main(run, args)


def prediction_name(rel_path):
    """File name of an image's prediction: its list path with the extension ``.png``."""
    return os.path.splitext(rel_path)[0] + ".png"


class PredictionWriter:
    """``on_prediction`` callback: writes trainid/, color/ (the preset's palette) and, for Cityscapes, labelid/ PNGs
    (the official label ids of the benchmark server)."""

    def __init__(self, output_dir, dataset, preset):
        self.output_dir, self.dataset, self.palette = output_dir, dataset, preset.palette
        cityscapes = preset.name == "cityscapes" and preset.num_classes == len(CLASS_NAMES)
        self.kinds = ["trainid", "color"] + (["labelid"] if cityscapes else [])

    def __call__(self, index, pred, label=None):
        name = prediction_name(self.dataset.rel_path(index))
        images = {"trainid": pred, "color": cv2.cvtColor(colorize(pred, self.palette), cv2.COLOR_RGB2BGR),
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


def report(matrix, output_dir, settings, names=None):
    """Log the table and write metrics.json and per_class_iou.csv; returns the metrics.json content."""
    result = matrix.summary()
    names = names or class_names(matrix.num_classes)
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
    if args.limit < 0:
        raise UserError(f"--limit must be >= 0, got {args.limit}")
    if not args.save_model and not args.pred_dir:
        raise UserError("nothing to evaluate: give --save_model PATH (a checkpoint or run directory, or a .pdparams "
                        "file), or --pred_dir DIR of saved train-id PNGs")
    output_dir = _output_dir(args)
    setup_logging(os.path.join(args.log_root or output_dir, "eval.log"))
    warn_ignored(args.explicit)
    device = setup_device(args.cuda, args.threads)
    seed_everything(args.seed)
    scales = tuple(args.scales or (MULTI_SCALES if args.multi_scales else (1.0,)))
    settings = dict(split=args.split, data_folder=os.path.abspath(args.data_folder), dataset=args.dataset,
                    base_size=args.base_size, crop_size=args.crop_size, scales=list(scales), flip=args.flip,
                    stride_rate=args.stride_rate, limit=args.limit, device=device)
    if args.pred_dir:
        settings.update(pred_dir=os.path.abspath(args.pred_dir), num_classes=args.num_classes)
    else:
        model, source, config = model_from_args(args)
        _check_classes(config["num_classes"], args, source)
        settings.update(checkpoint=os.path.abspath(source.path), checkpoint_format=source.format, model=config)
    input_norm = config["input_norm"] if not args.pred_dir else "imagenet"  # saved predictions need no input
    dataset = SegDataset(args.data_folder, args.split, args.dataset, build_val_transform(input_norm), args.num_classes,
                         preset=args.preset)
    writer = PredictionWriter(output_dir, dataset, args.preset) if args.save_predictions else None
    start = time.time()
    if args.pred_dir:
        matrix = evaluate_saved(args.pred_dir, dataset, args.num_classes, args.limit, writer)
    else:
        predict_fn = dygraph_predict_fn(model, args.window_batch)
        matrix = evaluate(predict_fn, dataset, args.num_classes, base_size=args.base_size or None,
                          crop_size=args.crop_size,
                          scales=scales, flip=args.flip, stride_rate=args.stride_rate, window_batch=args.window_batch,
                          on_prediction=writer, progress=sys.stderr.isatty(), limit=args.limit or None,
                          num_workers=args.num_workers)
    settings.update(images=min(len(dataset), args.limit or len(dataset)), seconds=round(time.time() - start, 2))
    if writer is not None:
        log.info("wrote %s PNGs under %s", "/, ".join(writer.kinds) + "/", output_dir)
    return report(matrix, output_dir, settings, list(args.preset.classes))


def _check_classes(model_classes, args, source):
    """The model must predict the data set's classes: a 19-class model cannot be scored on ADE20K's 150.
    A folder of no preset takes the model's class count (and, for the table, the names it saved)."""
    if args.preset.numbered and "num_classes" not in args.explicit:
        from danet.data.presets import get_preset

        names = saved_class_names(source)
        args.preset = get_preset(args.dataset, os.path.join(args.data_folder, args.dataset), model_classes)
        if names and len(names) == model_classes:
            args.preset = dataclasses.replace(args.preset, classes=tuple(names))
    if model_classes != args.preset.num_classes:
        raise UserError(f"{source.path} predicts {model_classes} classes but --dataset {args.dataset} has "
                        f"{args.preset.num_classes}: choose the --dataset the model was trained on")
    args.num_classes = model_classes


def saved_class_names(source):
    """Class names a checkpoint carries: from its training data set, or from an imported file (mmseg's meta)."""
    state = source.state or {}
    names = (state.get("dataset") or {}).get("classes") or state.get("classes")
    if not names and source.imported is not None:
        names = source.imported.meta.get("classes")
    return names


def console():
    """The console script: exit status 0 on success (``main`` returns its result to callers in Python)."""
    main()


if __name__ == "__main__":
    console()
