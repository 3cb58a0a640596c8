"""Prepare an official data set download for training and evaluation: labels in the reader's convention and lists.

    danet-prepare-dataset cityscapes dataset/cityscapes --workers 4   # leftImg8bit/ + gtFine/ unpacked there
    danet-prepare-dataset ade20k dataset/ade20k                       # ADEChallengeData2016/ unpacked there
    danet-prepare-dataset voc dataset/voc                             # VOCdevkit/ (+ benchmark_RELEASE/ for aug)
    danet-prepare-dataset pascal_context dataset/pascal_context       # VOCdevkit/VOC2010 + trainval/*.mat
    danet-prepare-dataset coco_stuff dataset/coco_stuff               # the 10k or 164k download
    danet-prepare-dataset custom dataset/mydata                       # images/ + labels/ + classes.txt

ROOT (default ``dataset/NAME``) is prepared in place: converted labels where the official format is not a
label PNG of the reader's convention (SBD and Context ``.mat``, COCO-Stuff ids), and the lists
``{train,val}Images.txt`` / ``{train,val}Labels.txt``. Then ``--data_folder dataset --dataset NAME`` reads it
(use the folder name of ROOT for a custom set). Idempotent; exits with status 1 and one line naming the
missing or unreadable files. See dataset/README.md.
"""
import argparse
import importlib
import logging
import os
import sys

from danet.errors import UserError

NAMES = ("cityscapes", "ade20k", "voc", "pascal_context", "coco_stuff", "custom")


def prepare(name, root, workers=1, force=False, progress=True):
    """Prepare ``root`` for data set ``name`` (see the module docstring); returns the PrepareSummary."""
    if name == "cityscapes":
        from danet.data.prepare import prepare_cityscapes

        return prepare_cityscapes(root, workers=workers, force=force, progress=progress)
    if name not in NAMES:
        raise UserError(f"unknown data set {name!r}: choose one of {', '.join(NAMES)}")
    if not os.path.isdir(root):
        raise UserError(f"{root} does not exist: unpack the official {name} download there first "
                        "(see dataset/README.md)")
    module = importlib.import_module(f"danet.data.datasets.{name}")
    return module.prepare(root, workers=workers, force=force, progress=progress)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="danet-prepare-dataset", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:9]))
    parser.add_argument("name", choices=NAMES, help="the data set")
    parser.add_argument("root", nargs="?", default=None, help="its folder (default: dataset/NAME)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rewrite labels and lists even if up to date")
    args = parser.parse_args(argv)
    root = args.root or os.path.join("dataset", args.name)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    try:
        summary = prepare(args.name, root, workers=args.workers, force=args.force)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    lists = ", ".join(summary.lists_written) or "none"
    print(f"{root}: {summary.images} images; {summary.labels_written} labels written, "
          f"{summary.labels_skipped} up to date; lists written: {lists}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
