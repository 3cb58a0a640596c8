"""The main job end to end on the embedded synthetic data set, as a user would run it.

    python tools/demo.py --mode executor   # make demo
    python tools/demo.py --mode dygraph    # make demo-dygraph

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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Small enough for a 2-core CPU in a few minutes, large enough to learn the synthetic scenes.
DATA = dict(num_train=48, num_val=12, height=128, width=256, seed=0)
TRAIN = ["--backbone", "resnet18", "--base_size", "128", "--crop_size", "128", "--batch_size", "4",
         "--lr", "0.01", "--lr_scheduler", "poly", "--warm_up", "--warmup_epoch", "1", "--scale",
         "--log_iters", "12", "--num_workers", "1", "--use_vdl"]


def run(cmd):
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["executor", "dygraph"], default="executor")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default: %(default)s)")
    p.add_argument("--data_folder", default="dataset")
    args = p.parse_args(argv)
    start = time.time()
    from danet.data.synthetic import make_synthetic_dataset

    data_dir = make_synthetic_dataset(os.path.join(ROOT, args.data_folder), **DATA)
    print(f"data set: {data_dir}")
    save_dir = os.path.join("checkpoint", f"demo_{args.mode}")
    out_dir = os.path.join("output", f"demo_{args.mode}")
    py = sys.executable
    run([py, "-m", f"danet.train_{args.mode}", "--data_folder", args.data_folder, "--epoch_num", str(args.epochs),
         "--eval_interval", str(args.epochs), "--save_interval", str(max(1, args.epochs // 3)),
         "--save_dir", save_dir, "--resume"] + TRAIN)
    model_flags = ["--backbone", "resnet18", "--data_folder", args.data_folder, "--base_size", "256",
                   "--crop_size", "128", "--output_dir", out_dir]
    convert = ["--change_executor_to_dygraph"] if args.mode == "executor" else []
    run([py, "-m", "danet.eval", "--save_model", os.path.join(save_dir, "best"), "--save_predictions", "--flip"]
        + convert + model_flags)
    pictures = os.path.join(out_dir, "pictures")
    run([py, "tools/predict.py", "--save_model", os.path.join(save_dir, "best"), "--crop_size", "128",
         "--output_dir", pictures, "--limit", "4", os.path.join(data_dir, "leftImg8bit", "val")])
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
