"""The console script danet-make-synthetic, run from a checkout (see danet/tools/make_synthetic_dataset.py)."""
import sys

from danet.tools.make_synthetic_dataset import main

if __name__ == "__main__":
    sys.exit(main())
