"""The console script danet-import, run from a checkout: see danet/tools/import_weights.py (`danet-import --help`)."""
from danet.tools.import_weights import console

if __name__ == "__main__":
    console()
