"""The console script danet-convert, run from a checkout: see danet/tools/convert.py (`danet-convert --help`)."""
import sys

from danet.tools.convert import main

if __name__ == "__main__":
    sys.exit(main())
