"""The console script danet-export, run from a checkout: see danet/tools/export.py (`danet-export --help`)."""
import sys

from danet.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
