"""Benchmark DANet here: training images/s in both graph modes, evaluation images/s (whole image and sliding
window), data-pipeline samples/s at Cityscapes size, peak memory; optionally side by side with PaddleSeg.

    PYTHONPATH=. python tools/benchmark.py --json bench.json                      # defaults: a few minutes
    ../shared/bench/setup_peer_venv.sh /tmp/peer                                  # PaddleSeg 2.8.0 in a venv
    PYTHONPATH=. python tools/benchmark.py --peer /tmp/peer/bin/python --iters 5 --warmup 2 \\
        --only train_dygraph train_static eval_whole                              # ours vs theirs, alternating
    PYTHONPATH=. python tools/benchmark.py --backbone resnet101 --only eval_whole --eval_size 1024 2048 \\
        --eval_iters 1 --warmup 0                                                 # whole-image inference memory
"""
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
warnings.filterwarnings("ignore", message="No ccache found")  # Paddle's import-time notice, irrelevant here

from danet.benchmark import format_report, main  # noqa: E402

if __name__ == "__main__":
    report = main()
    if report:
        print(format_report(report))
