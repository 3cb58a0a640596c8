"""The console script danet-convert, run from a checkout: see danet/tools/convert.py (`danet-convert --help`)."""
from danet.tools.convert import console

if __name__ == "__main__":
    console()
