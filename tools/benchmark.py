"""The console script danet-benchmark, run from a checkout: see danet/tools/benchmark.py (`danet-benchmark --help`)."""
from danet.tools.benchmark import console

if __name__ == "__main__":
    console()
