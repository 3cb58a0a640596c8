"""tools/demo.py end to end, as `make demo` runs it, on a tiny synthetic set and two epochs."""
import json
import os
import re

import cv2
import pytest
from faultlib import ROOT, run_entry, tree_hashes

pytestmark = [pytest.mark.slow, pytest.mark.process]


def test_demo_trains_converts_evaluates_and_draws(tmp_path):
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    # A folder holding a user's own demo run, where this demo runs with other --save_dir and --output_dir.
    work = tmp_path / "work"
    for folder in ("checkpoint/demo_executor/epoch_0002", "output/demo_executor"):
        (work / folder).mkdir(parents=True)
        (work / folder / "mine.txt").write_text("the user's own run\n")
    before = tree_hashes(work)
    done = run_entry(os.path.join(ROOT, "tools", "demo.py"),
                     ["--mode", "executor", "--epochs", "2", "--num_train", "4", "--num_val", "2", "--data_folder",
                      tmp_path / "data", "--save_dir", ckpt, "--output_dir", out], timeout=600, cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout + done.stderr
    # Every stage is the real command line, printed before it runs.
    for stage in ("danet.train_executor", "danet.eval", "danet.tools.predict"):
        assert re.search(rf"^\$ .*{re.escape(stage)}", done.stdout, re.M), stage
    # The Executor checkpoint was converted and the dygraph copy evaluated.
    assert (ckpt / "epoch_0002-dygraph" / "model.pdparams").is_file()
    assert "--change_executor_to_dygraph" in done.stdout
    # The per-class table and the mIoU it ends with agree with metrics.json.
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert re.search(r"^road\s+[0-9.]+", text, re.M)
    assert f"mIoU on the synthetic val split: {metrics['miou']:.4f}" in done.stdout
    # Paddle's C++ INFO and WARNING lines ("New Executor is Running", PIR notices) are not shown to a user.
    assert not re.search(r"^[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] ", text, re.M), text
    # Input | colour mask | overlay, side by side, for each val image.
    pictures = sorted((out / "pictures" / "side_by_side").rglob("*.png"))
    assert len(pictures) == 2
    val_image = next((tmp_path / "data" / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))
    h, w = cv2.imread(str(val_image)).shape[:2]
    assert cv2.imread(str(pictures[0])).shape[:2] == (h, 3 * w)
    # The user's own demo run is untouched, and nothing else was written where the demo ran.
    assert tree_hashes(work) == before


def test_demo_refuses_a_data_folder_that_is_not_synthetic(tmp_path):
    data = tmp_path / "data" / "cityscapes"
    data.mkdir(parents=True)
    (data / "notes.txt").write_text("a real data set lives here\n")
    done = run_entry("tools/demo.py", ["--data_folder", tmp_path / "data", "--save_dir", tmp_path / "ckpt",
                                       "--output_dir", tmp_path / "out"])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "not a synthetic data set" in done.stderr
    assert (data / "notes.txt").read_text() == "a real data set lives here\n"
