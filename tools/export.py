"""The console script danet-export, run from a checkout: see danet/tools/export.py (`danet-export --help`)."""
from danet.tools.export import console

if __name__ == "__main__":
    console()
