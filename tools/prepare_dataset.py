"""The console script danet-prepare-dataset, run from a checkout (see danet/tools/prepare_dataset.py)."""
import sys

from danet.tools.prepare_dataset import main

if __name__ == "__main__":
    sys.exit(main())
