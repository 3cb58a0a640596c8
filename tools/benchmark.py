"""The console script danet-benchmark, run from a checkout: see danet/tools/benchmark.py (`danet-benchmark --help`)."""
import sys

from danet.tools.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
