"""The console script danet-predict, run from a checkout: see danet/tools/predict.py (`danet-predict --help`)."""
from danet.tools.predict import console

if __name__ == "__main__":
    console()
