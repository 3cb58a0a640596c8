"""The console script danet-demo, run from a checkout: see danet/tools/demo.py (`danet-demo --help`)."""
import sys

from danet.tools.demo import main

if __name__ == "__main__":
    sys.exit(main())
