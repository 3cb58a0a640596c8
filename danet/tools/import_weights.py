"""Import a released DANet of another implementation as a checkpoint of this project.

    danet-import DANet101.pth.tar checkpoint/official_danet101               # the paper's official release
    danet-import danet_r50-d8_512x1024_40k_cityscapes_XXXX.pth checkpoint/mmseg_r50
    danet-import model.pdparams checkpoint/paddleseg_r50 --from paddleseg
    danet-import checkpoint/DANet101_better_model_paddle1.6.pdparams checkpoint/seed_danet101

Sources: the official DANet (``.pth.tar``), mmsegmentation and sssegmentation (``.pth``), PaddleSeg
(``model.pdparams``) and the seed port's Paddle 1.6 ``.pdparams`` / 1.5.2 folder, detected from the
keys (``--from`` forces one). The model settings (depth, classes, stem, shortcuts, dilations,
upsampling, input normalisation) come from the tensors and what the file carries; what neither shows
has a flag with a documented default per source. PyTorch files are read without torch and without
running code from them. OUT is a dygraph checkpoint (model.pdparams + state.json with the config and
where it came from) that eval, predict, export, convert and ``--pretrained`` accept; nothing is written
unless every model tensor is filled and the model runs.
"""
import argparse
import collections
import os
import sys

import numpy as np

import danet.quiet  # noqa: F401  (Paddle's C++ log level: before Paddle loads)
from danet import build_model, checkpoint, weights
from danet.data.presets import BUILTIN, CITYSCAPES_CLASSES, get_preset
from danet.engine.common import arch
from danet.errors import UserError
from danet.runtime import run_main, setup_device, setup_logging
from danet.weights.sources import SOURCES


def build_parser():
    p = argparse.ArgumentParser(prog="danet-import", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:7]))
    p.add_argument("src", help="the released checkpoint (file, or the seed's 1.5.2 folder)")
    p.add_argument("out", help="the checkpoint directory to write")
    p.add_argument("--from", dest="source", choices=SOURCES, default=None, help="the source (default: from its keys)")
    p.add_argument("--align_corners", choices=["true", "false"], default=None,
                   help="the upsampling of a file that does not say it (mmseg without its config: default false)")
    p.add_argument("--output_stride", type=int, choices=[8, 16], default=None,
                   help="output stride, which no tensor shows (sssegmentation D16 models: 16; default 8)")
    p.add_argument("--dataset", choices=BUILTIN, default=None,
                   help="the data set the file was trained on: its class names and palette go into OUT (for "
                        "predict and export; default: the names the file carries, else numbers)")
    p.add_argument("--replace", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    return p


def import_checkpoint(src, out, source=None, replace=False, dataset=None, **options):
    """Read ``src`` (any supported source), check it fills the model it describes, write checkpoint ``out``.

    ``dataset`` (a built-in preset name) names the classes; it must have the model's class count.

    Returns the :class:`danet.weights.Weights` read (``.imported`` holds what was dropped and the provenance).
    """
    out = os.path.normpath(out)
    if os.path.exists(out) and not replace:
        raise UserError(f"{out} already exists: choose another destination or add --replace")
    found = weights.read_weights(src, source=source, **{k: v for k, v in options.items() if v is not None})
    if found.imported is None:
        raise UserError(f"{src} is already a checkpoint of this project ({found.format} format): use it as it is")
    config = arch(found.config)
    preset = get_preset(dataset) if dataset else None
    if preset is not None and preset.num_classes != config["num_classes"]:
        raise UserError(f"{src} predicts {config['num_classes']} classes but --dataset {dataset} has "
                        f"{preset.num_classes}: choose the data set it was trained on "
                        f"({_matching(config['num_classes']) or 'none of the presets has that count'})")
    model = build_model(**config)
    weights.fit({k: v.shape for k, v in model.state_dict().items()}, found.tensors, found.path,
                hint=f"the {found.format} mapping does not fit the model it inferred; report this with the file")
    _check_runs(model, found.tensors)
    imported = found.imported
    state = dict(format="dygraph", epoch=0, iteration=0, config=config,
                 imported=dict(source=imported.meta.get("source"), path=os.path.abspath(src),
                               dropped=len(imported.dropped), notes=imported.meta.get("notes", [])))
    if preset is not None:
        state["dataset"] = preset.describe()
    elif imported.meta.get("classes"):  # mmseg files name their classes: eval tables and pictures use them
        state["dataset"] = dict(name=None, classes=list(imported.meta["classes"]), palette=imported.meta.get("palette"))
    parent, name = os.path.dirname(out) or ".", os.path.basename(out)
    os.makedirs(parent, exist_ok=True)
    checkpoint.save_checkpoint(parent, name, lambda tmp: checkpoint.save_arrays(
        os.path.join(tmp, "model.pdparams"), {k: found.tensors[k] for k in model.state_dict()}), state, pointers=())
    return found


def _check_runs(model, tensors):
    """The imported model gives finite logits on a small random image (a broken map usually does not)."""
    import paddle

    for name, value in model.state_dict().items():
        value.set_value(tensors[name])
    model.eval()
    with paddle.no_grad():
        logits = model(paddle.to_tensor(np.random.default_rng(0).standard_normal((1, 3, 65, 97)).astype("float32")))
    if not np.isfinite(logits.numpy()).all():
        raise UserError("the imported model gives non-finite logits on a random image: the file is damaged or the "
                        "mapping wrong; nothing was written")


def _matching(num_classes):
    """The presets with ``num_classes`` classes, as flags: "--dataset voc" (or "")."""
    return " or ".join(f"--dataset {name}" for name in BUILTIN if get_preset(name).num_classes == num_classes)


def report(found, out, dataset=None):
    imported, config = found.imported, arch(found.config)
    reasons = collections.Counter(imported.dropped.values())
    lines = [f"read {found.path}: {found.format} DANet ({imported.meta.get('source_format', 'weights')})",
             f"  mapped {len(found.tensors)} tensors; dropped {len(imported.dropped)}"
             + "".join(f"\n    {count} x {reason}" for reason, count in reasons.most_common()),
             "  model: " + ", ".join(f"{k}={v}" for k, v in config.items())]
    lines += [f"  note: {note}" for note in imported.meta.get("notes", [])]
    classes = get_preset(dataset).classes if dataset else imported.meta.get("classes")
    if classes:
        lines.append(f"  classes: {len(classes)} named ({', '.join(map(str, classes[:4]))}, ...)"
                     + (f" from --dataset {dataset}" if dataset else ""))
    elif config["num_classes"] == len(CITYSCAPES_CLASSES):  # what predict and export call 19 unnamed classes
        lines.append(f"  classes: {config['num_classes']}, Cityscapes' names and colours (--dataset for another set)")
    else:
        hint = _matching(config["num_classes"])
        lines.append(f"  classes: {config['num_classes']} numbered" + (f" (add {hint} to name them)" if hint else ""))
    lines.append(f"wrote {out} (dygraph checkpoint: danet-eval / danet-predict / danet-export --save_model {out}, "
                 f"or --pretrained {out})")
    return "\n".join(lines)


def run(args):
    setup_logging()
    setup_device(cuda=False)
    align = None if args.align_corners is None else args.align_corners == "true"
    found = import_checkpoint(args.src, args.out, args.source, args.replace, args.dataset, align_corners=align,
                              output_stride=args.output_stride)
    print(report(found, args.out, args.dataset))
    return found


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_main(run, args)


def console():
    """The console script: exit status 0 on success (``main`` returns its result to callers in Python)."""
    main()


if __name__ == "__main__":
    console()
