"""Write the synthetic street-scene data set (Cityscapes layout and lists) used by the demos and tests.

    danet-make-synthetic --out dataset     # -> dataset/cityscapes, 40 train + 12 val images

Same settings -> byte-identical files; a second run with the same settings does nothing. See dataset/README.md.
"""
import argparse
import logging
import sys

from danet.data.synthetic import make_synthetic_dataset
from danet.errors import UserError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dataset", help="parent folder; the set goes to <out>/cityscapes")
    parser.add_argument("--num_train", type=int, default=40)
    parser.add_argument("--num_val", type=int, default=12)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    try:
        root = make_synthetic_dataset(args.out, args.num_train, args.num_val, args.height, args.width, args.seed)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"synthetic data set in {root}: {args.num_train} train + {args.num_val} val images, "
          f"{args.height}x{args.width}; use --data_folder {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
