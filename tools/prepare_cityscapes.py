"""The console script danet-prepare-cityscapes, run from a checkout (see danet/tools/prepare_cityscapes.py)."""
import sys

from danet.tools.prepare_cityscapes import main

if __name__ == "__main__":
    sys.exit(main())
