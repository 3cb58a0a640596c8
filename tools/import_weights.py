"""The console script danet-import, run from a checkout: see danet/tools/import_weights.py (`danet-import --help`)."""
import sys

from danet.tools.import_weights import main

if __name__ == "__main__":
    sys.exit(main())
