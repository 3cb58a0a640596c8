"""The console script danet-predict, run from a checkout: see danet/tools/predict.py (`danet-predict --help`)."""
import sys

from danet.tools.predict import main

if __name__ == "__main__":
    sys.exit(main())
