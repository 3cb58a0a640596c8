"""Bad inputs through the real entry points: one line on stderr naming the culprit, nothing saved is damaged.

Every case starts ``python -m danet.train_dygraph`` / ``train_executor`` / ``eval`` as a user would, on a
corrupted copy of one tiny generated data set (6 training and 2 validation images of 64x128), with a
``--save_dir`` that already holds a complete checkpoint. The process must exit non-zero with exactly one
line on stderr (besides library warnings) that names the file, list line, flag or tensor at fault and says
what to do, show no traceback unless ``--debug`` is given, and leave every byte of the earlier checkpoint as
it was. The cases that build a model (checkpoint errors) are marked slow.
"""
import functools
import os
import shutil

import cv2
import numpy as np
import pytest
from faultlib import copy_dataset, list_lines, listed, message_lines, run_entry, train_args, tree_hashes, write_lines

from danet import build_model, checkpoint

CONFIG = dict(dilated=True, multi_grid=False, multi_dilation=[4, 8, 16], recompute=False)

pytestmark = pytest.mark.process  # every test here runs the entry points as processes


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory):
    """A save_dir holding the complete checkpoint of a one-epoch dygraph run (made by the real entry point)."""
    save_dir = str(tmp_path_factory.mktemp("faults_run"))
    result = run_entry("train_dygraph", train_args(data, save_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint.read_pointer(save_dir, "latest") == os.path.join(save_dir, "epoch_0001")
    return save_dir


def saved(save_dir):
    """What a failed run must not touch: every file but the logs (a run appends its error to train.log)."""
    return {k: v for k, v in tree_hashes(save_dir).items() if not k.endswith(".log")}


def assert_one_line_error(result, *culprits):
    """Non-zero exit, one line on stderr that contains every string of ``culprits``, no traceback."""
    lines = message_lines(result.stderr)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1, lines
    for culprit in culprits:
        assert culprit in lines[0]
    return lines[0]


# -- data --------------------------------------------------------------------------------------------------------
def _missing_image(d):
    path = listed(d, "trainImages.txt", 2)
    os.remove(path)
    return [f"trainImages.txt line 3: listed file {path} does not exist", "fix the list"]


def _truncated_image(d):
    path = listed(d, "trainImages.txt", 3)
    with open(path, "r+b") as f:
        f.truncate(100)
    return [f"cannot read image {path}", "truncated", "trainImages.txt line 4"]


def _not_an_image(d):
    path = listed(d, "trainImages.txt", 1)
    with open(path, "w") as f:
        f.write("this is a text file, not a PNG\n")
    return [f"cannot read image {path}", "trainImages.txt line 2"]


def _label_of_another_size(d):
    path = listed(d, "trainLabels.txt", 0)
    cv2.imwrite(path, np.zeros((32, 64), np.uint8))
    return [f"label {path} is 64x32 but image", "is 128x64", "trainImages.txt line 1", "must have the same size"]


def _label_values_outside_the_classes(d):
    path = listed(d, "trainLabels.txt", 4)
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    label[10:20, 10:20] = 40
    cv2.imwrite(path, label)
    return [f"label {path} has values 40 outside 0..18 and 255", "trainImages.txt line 5", "prepare_cityscapes"]


def _lists_of_different_lengths(d):
    write_lines(d, "trainLabels.txt", list_lines(d, "trainLabels.txt")[:-1])
    return ["trainImages.txt lists 6 images but", "trainLabels.txt lists 5 labels", "same length"]


def _empty_lists(d):
    write_lines(d, "trainImages.txt", [])
    write_lines(d, "trainLabels.txt", [""])
    return ["trainImages.txt is empty", "at least one sample"]


DATA_FAULTS = {f.__name__[1:]: f for f in [_missing_image, _truncated_image, _not_an_image, _label_of_another_size,
                                            _label_values_outside_the_classes, _lists_of_different_lengths,
                                            _empty_lists]}
READ_IN_WORKERS = ["truncated_image", "not_an_image", "label_of_another_size", "label_values_outside_the_classes"]


@pytest.fixture
def broken(data, tmp_path):
    """Returns ``corrupt(name) -> (data folder, culprit strings)`` on a fresh copy of the data set."""
    def corrupt(name):
        folder = copy_dataset(data, str(tmp_path / "data"))
        return folder, DATA_FAULTS[name](folder)

    return corrupt


@pytest.mark.parametrize("fault", list(DATA_FAULTS))
def test_bad_training_data_stops_dygraph_training_with_one_line(fault, broken, run_dir):
    folder, culprits = broken(fault)
    before = saved(run_dir)
    assert_one_line_error(run_entry("train_dygraph", train_args(folder, run_dir)), *culprits)
    assert saved(run_dir) == before


@pytest.mark.parametrize("entry, fault", [("train_dygraph", f) for f in READ_IN_WORKERS]
                         + [("train_executor", "truncated_image")])  # the loader is the same: one executor case
def test_a_bad_sample_read_in_a_worker_process_is_one_line_too(fault, entry, broken, run_dir):
    """Paddle re-raises a worker's error in its reader thread, as a traceback of a traceback (both versions)."""
    folder, culprits = broken(fault)
    before = saved(run_dir)
    assert_one_line_error(run_entry(entry, train_args(folder, run_dir, workers=2)), *culprits)
    assert saved(run_dir) == before


@pytest.mark.parametrize("fault", ["truncated_image", "empty_lists"])
def test_bad_validation_data_stops_eval_with_one_line(fault, broken, run_dir, tmp_path):
    folder, culprits = broken(fault)
    for name in ("Images", "Labels"):  # make the validation lists the broken training ones
        write_lines(folder, f"val{name}.txt", list_lines(folder, f"train{name}.txt"))
    before = saved(run_dir)
    culprits = [c.replace("trainImages", "valImages") for c in culprits]
    result = run_entry("eval", ["--save_model", run_dir, "--data_folder", folder, "--base_size", "64",
                                "--crop_size", "32", "--output_dir", tmp_path / "eval"])
    assert_one_line_error(result, *culprits)
    assert saved(run_dir) == before


@pytest.mark.parametrize("workers", [0, 2])
def test_debug_shows_the_traceback_of_a_data_error(workers, broken, run_dir):
    folder, culprits = broken("truncated_image")
    result = run_entry("train_dygraph", train_args(folder, run_dir, "--debug", workers=workers))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and culprits[0] in result.stderr


# -- flags -------------------------------------------------------------------------------------------------------
FLAG_FAULTS = {
    "unknown_backbone": (["--backbone", "resnet77"], ["--backbone", "invalid choice: 'resnet77'"]),
    "crop_size_0": (["--crop_size", "0"], ["--crop_size must be at least 1, got 0"]),
    "batch_larger_than_the_data": (["--batch_size", "7"], ["--batch_size 7", "more than the 6 training images",
                                                           "lower --batch_size"]),
    "multi_dilation_of_the_wrong_length": (["--multi_grid", "--multi_dilation", "4", "8", "16"],
                                           ["--multi_dilation needs 2 positive values for resnet18", "[4, 8, 16]"]),
}


@pytest.mark.parametrize("entry, fault", [("train_dygraph", f) for f in FLAG_FAULTS]
                         + [("train_executor", "batch_larger_than_the_data")])  # the parser is shared
def test_flags_that_cannot_work_stop_training_with_one_line(fault, entry, data, run_dir):
    flags, culprits = FLAG_FAULTS[fault]
    before = saved(run_dir)
    assert_one_line_error(run_entry(entry, train_args(data, run_dir) + flags), *culprits)
    assert saved(run_dir) == before


def test_eval_refuses_a_crop_size_of_0(data, run_dir, tmp_path):
    result = run_entry("eval", ["--save_model", run_dir, "--data_folder", data, "--crop_size", "0",
                                "--output_dir", tmp_path / "eval"])
    assert_one_line_error(result, "--crop_size must be at least 1")


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_an_unwritable_save_dir_stops_before_training(where, data, tmp_path):
    """As root, permissions do not stop a write: a path through a regular file does."""
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me\n")
    save_dir = blocker / "run" if where == "under_a_file" else blocker
    result = run_entry("train_dygraph", train_args(data, save_dir))
    assert_one_line_error(result, f"--save_dir {save_dir} is not writable", "choose another folder")
    assert blocker.read_text() == "keep me\n"
    assert "training" not in result.stdout  # stopped before the data, the model and the first iteration


# -- checkpoints -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def foreign(run_dir, tmp_path_factory):
    """Checkpoints that cannot load into the resnet18 / 19-class model of the tests.

    Lone ``.pdparams`` files and checkpoint directories (in both formats) of a resnet34 and of a 5-class
    model; a truncated copy of the good checkpoint and a truncated lone ``.pdparams``.
    """
    root = tmp_path_factory.mktemp("foreign")
    out = {}
    for key, backbone, classes in [("backbone", "resnet34", 19), ("classes", "resnet18", 5)]:
        config = dict(CONFIG, backbone=backbone, num_classes=classes)
        params = str(root / f"{key}.pdparams")
        model = build_model(**config)
        checkpoint.save_arrays(params, {k: v.numpy() for k, v in model.state_dict().items()})
        out[f"{key}_file"] = params
        for fmt in ("dygraph", "executor"):
            state = dict(format=fmt, epoch=1, iteration=3, best_miou=-1.0, scheduler={}, config=config)
            link = functools.partial(_link_into, params, "model.pdparams")
            out[f"{key}_{fmt}"] = checkpoint.save_checkpoint(str(root / f"{key}_{fmt}"), "epoch_0001", link, state)
    good = os.path.join(run_dir, "epoch_0001")
    truncated = str(root / "truncated" / "epoch_0001")
    shutil.copytree(good, truncated, copy_function=os.link)
    size = os.path.getsize(os.path.join(good, "model.pdparams"))
    os.remove(os.path.join(truncated, "model.pdparams"))
    with open(os.path.join(good, "model.pdparams"), "rb") as src:
        head = src.read(size // 2)
    with open(os.path.join(truncated, "model.pdparams"), "wb") as f:
        f.write(head)
    out["truncated_dir"] = truncated
    out["truncated_file"] = str(root / "truncated.pdparams")
    with open(out["truncated_file"], "wb") as f:
        f.write(head)
    out["missing"] = str(root / "no_such_checkpoint")
    return out


def _link_into(src, name, folder):
    os.link(src, os.path.join(folder, name))


def _resume_cases(fmt):
    other = "the dygraph trainer" if fmt == "executor" else None
    return {
        "missing": ("missing", ["checkpoint {path} does not exist"]),
        "truncated": ("truncated_dir", ["{path}/model.pdparams is missing or truncated", "use another checkpoint"]),
        "other_backbone": (f"backbone_{fmt}", ["{path} was trained with other model flags",
                                               "backbone resnet34 -> resnet18", "same model flags"]),
        "other_classes": (f"classes_{fmt}", ["{path} was trained with other model flags", "num_classes 5 -> 19",
                                             "same model flags"]),
        # the good checkpoint of the run is a dygraph one: the executor trainer must say so
        "other_format": ("good", [f"is a dygraph checkpoint; resume it with {other}"]) if other else None,
    }


RESUME = [(entry, case) for entry, fmt in [("train_dygraph", "dygraph"), ("train_executor", "executor")]
          for case, spec in _resume_cases(fmt).items() if spec]


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("entry, case", RESUME)
def test_a_checkpoint_that_cannot_be_resumed_stops_with_one_line(entry, case, data, run_dir, foreign):
    key, culprits = _resume_cases(entry.replace("train_", ""))[case]
    path = os.path.join(run_dir, "epoch_0001") if key == "good" else foreign[key]
    before = saved(run_dir)
    result = run_entry(entry, train_args(data, run_dir, "--resume", path, "--num_classes", "19"))
    assert_one_line_error(result, *[c.format(path=path) for c in culprits])
    assert saved(run_dir) == before


PRETRAINED = {
    "missing": ("missing", ["checkpoint {path} does not exist"]),
    "truncated": ("truncated_file", ["{path} is truncated or not a Paddle weight file", "use another checkpoint"]),
    "other_backbone": ("backbone_file", ["{path} does not fit the model", "unexpected", "check --backbone"]),
    # (initial weights of another class count are fine-tuning: their classifiers start fresh, see test_weights)
}


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("case", list(PRETRAINED))
@pytest.mark.parametrize("entry", ["train_dygraph", "train_executor"])
def test_initial_weights_that_do_not_fit_stop_with_one_line(entry, case, data, run_dir, foreign, tmp_path):
    key, culprits = PRETRAINED[case]
    before = saved(run_dir)
    result = run_entry(entry, train_args(data, run_dir, "--pretrained", foreign[key]))
    assert_one_line_error(result, *[c.format(path=foreign[key]) for c in culprits])
    assert saved(run_dir) == before


EVAL = {
    "missing": ("missing", [], ["checkpoint {path} does not exist"]),
    "truncated": ("truncated_dir", [], ["{path}/model.pdparams is missing or truncated"]),
    # a bare .pdparams shows its depth and classes: flags that contradict them are refused by name
    "other_backbone_file": ("backbone_file", ["--backbone", "resnet18"],
                            ["holds a model with --backbone resnet34", "the flags ask for --backbone resnet18"]),
    "other_classes_file": ("classes_file", ["--backbone", "resnet18", "--num_classes", "19"],
                           ["holds a model with --backbone resnet18, --num_classes 5", "--num_classes 19"]),
    "other_backbone_dir": ("backbone_dygraph", ["--backbone", "resnet18"],
                           ["holds a model with --backbone resnet34", "the flags ask for --backbone resnet18"]),
}


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("case", list(EVAL))
def test_eval_of_a_checkpoint_that_does_not_fit_stops_with_one_line(case, data, foreign, tmp_path):
    key, flags, culprits = EVAL[case]
    result = run_entry("eval", ["--save_model", foreign[key], "--data_folder", data, "--base_size", "64",
                                "--crop_size", "32", "--output_dir", tmp_path / "eval", *flags])
    assert_one_line_error(result, *[c.format(path=foreign[key]) for c in culprits])


@pytest.mark.slow
@pytest.mark.process
def test_debug_shows_the_traceback_of_a_checkpoint_error(data, run_dir, foreign):
    result = run_entry("train_dygraph", train_args(data, run_dir, "--resume", foreign["truncated_dir"], "--debug"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "is missing or truncated" in result.stderr
