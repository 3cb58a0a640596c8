"""The main job end to end on the embedded synthetic data set, as a user would run it.

    danet-demo --mode executor   # make demo
    danet-demo --mode dygraph    # make demo-dygraph

Writes the data set (if missing) under dataset/, trains, converts an Executor checkpoint for
dygraph, evaluates with eval.py (per-class IoU table and mIoU), and saves prediction images
(input | colour mask | overlay). Every stage is the real command line, printed before it runs.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = "."  # every stage runs in the current folder (the repository root under `make demo`)

# Small enough for a 2-core CPU in a few minutes, large enough to learn the synthetic scenes.
DATA = dict(num_train=48, num_val=12, height=128, width=256, seed=0)
# From scratch (no ImageNet weights here), on 2 cores. Measured on this set (val mIoU, same minutes): batch 2
# beats batch 4 (twice the steps for the same images); LR 0.005 beats 0.01 and 0.02 (README: "Demo settings").
MODEL = ["--backbone", "resnet18", "--crop_size", "128"]  # the training crop is also the sliding window
TRAIN = MODEL + ["--base_size", "128", "--batch_size", "2", "--lr", "0.005", "--lr_scheduler", "poly", "--warm_up",
                 "--warmup_epoch", "1", "--scale", "--log_iters", "24", "--num_workers", "1", "--use_vdl"]
# --scale trains at 0.75-2x the images' size (short side 96-256 for base 128), as the seed does on Cityscapes;
# evaluating at 1.5x (long side 384) meets the model at the scale it saw most.
EVAL_BASE = "384"


def run(cmd):
    """Runs a stage as its own process from the repository root; a failed stage ends the demo with its code."""
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    code = subprocess.run(cmd, cwd=ROOT).returncode
    if code:
        stage = cmd[2] if cmd[1] == "-m" else cmd[1]
        sys.stderr.write(f"error: the demo stopped: {stage} exited with code {code} (its message is above)\n")
        sys.exit(code)


def build_parser():
    p = argparse.ArgumentParser(prog="danet-demo", description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["executor", "dygraph"], default="executor",
                   help="trainer: static graph with an Executor, or dygraph (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs; more continue a finished run "
                   "(default: %(default)s)")
    p.add_argument("--data_folder", default="dataset", help="where the synthetic set is written (default: dataset)")
    p.add_argument("--num_train", type=int, default=DATA["num_train"], help="synthetic train images "
                   "(default: %(default)s)")
    p.add_argument("--num_val", type=int, default=DATA["num_val"], help="synthetic val images (default: %(default)s)")
    p.add_argument("--save_dir", help="checkpoints and train.log (default: checkpoint/demo_<mode>)")
    p.add_argument("--output_dir", help="metrics, predictions and pictures (default: output/demo_<mode>)")
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.epochs < 1 or args.num_train < 1 or args.num_val < 1:
        p.error("--epochs, --num_train and --num_val must be at least 1")
    start = time.time()
    from danet.data.synthetic import make_synthetic_dataset
    from danet.runtime import run_main

    data = dict(DATA, num_train=args.num_train, num_val=args.num_val)
    data_dir = run_main(lambda a: make_synthetic_dataset(os.path.join(ROOT, a.data_folder), **data), args)
    print(f"data set: {data_dir}")
    save_dir = args.save_dir or os.path.join("checkpoint", f"demo_{args.mode}")
    out_dir = args.output_dir or os.path.join("output", f"demo_{args.mode}")
    py = sys.executable
    run([py, "-m", f"danet.train_{args.mode}", "--data_folder", args.data_folder, "--epoch_num", str(args.epochs),
         "--eval_interval", str(args.epochs), "--save_interval", str(max(1, args.epochs // 3)),
         "--save_dir", save_dir, "--resume"] + TRAIN)
    model_flags = MODEL + ["--data_folder", args.data_folder, "--base_size", EVAL_BASE, "--output_dir", out_dir]
    convert = ["--change_executor_to_dygraph"] if args.mode == "executor" else []
    run([py, "-m", "danet.eval", "--save_model", os.path.join(save_dir, "best"), "--save_predictions", "--flip"]
        + convert + model_flags)
    pictures = os.path.join(out_dir, "pictures")
    run([py, "-m", "danet.tools.predict", "--save_model", os.path.join(save_dir, "best"), "--base_size", EVAL_BASE]
        + MODEL + ["--output_dir", pictures, "--limit", "4", os.path.join(data_dir, "leftImg8bit", "val")])
    with open(os.path.join(ROOT, out_dir, "metrics.json")) as f:
        miou = json.load(f)["miou"]
    print(f"\nDone in {time.time() - start:.0f} s. mIoU on the synthetic val split: {miou:.4f}")
    print(f"  checkpoints and train.log: {save_dir}/ (VisualDL: visualdl --logdir {save_dir}/vdl)")
    print(f"  metrics.json, per_class_iou.csv, predictions: {out_dir}/")
    print(f"  input | colour mask | overlay pictures: {pictures}/side_by_side/")
    if miou < 0.5:
        print("  note: below the 0.5 this demo aims for; more --epochs train further (the run resumes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
