"""The console script danet-gpu-check, run from a checkout: see danet/tools/gpu_check.py (`danet-gpu-check --help`)."""
from danet.tools.gpu_check import console

if __name__ == "__main__":
    console()
