"""Prepare the official Cityscapes download for training: labelIds -> labelTrainIds PNGs and the list files.

    danet-prepare-cityscapes dataset/cityscapes --workers 4

Idempotent: a second run converts nothing. Exits with status 1 and a one-line error naming the missing or
unreadable files. See dataset/README.md.
"""
import argparse
import logging
import os
import sys

from danet.data.prepare import prepare_cityscapes
from danet.errors import UserError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="dataset/cityscapes",
                        help="folder holding leftImg8bit/ and gtFine/ (default: dataset/cityscapes)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rewrite labels and lists even if up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    try:
        summary = prepare_cityscapes(args.root, workers=args.workers, force=args.force)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    lists = ", ".join(summary.lists_written) or "none"
    print(f"{args.root}: {summary.images} images; {summary.labels_written} labels written, "
          f"{summary.labels_skipped} up to date; lists written: {lists}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
