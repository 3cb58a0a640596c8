"""tools/prepare_cityscapes.py on a tiny Cityscapes-shaped folder (the synthetic set's labelIds output)."""
import importlib.util
import logging
import os

import cv2
import numpy as np
import pytest

from danet.data.cityscapes import SegDataset
from danet.data.prepare import prepare_cityscapes
from danet.data.synthetic import make_synthetic_dataset
from danet.errors import UserError

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "prepare_cityscapes.py")
LISTS = ("trainImages.txt", "trainLabels.txt", "valImages.txt", "valLabels.txt")


def _tool_main(argv):
    """Runs the tool's main() in this process, restoring the logging set-up it replaces."""
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    spec = importlib.util.spec_from_file_location("prepare_cityscapes_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.main(argv)
    finally:
        for handler in list(root_logger.handlers):
            if handler not in handlers:
                root_logger.removeHandler(handler)
        for handler in handlers:
            root_logger.addHandler(handler)
        root_logger.setLevel(level)


@pytest.fixture
def download(tmp_path):
    """A folder shaped like the official download (labelIds only, no lists) + the expected outputs."""
    root = make_synthetic_dataset(str(tmp_path), num_train=3, num_val=2, height=48, width=96)
    expected = {}
    for name in LISTS:
        with open(os.path.join(root, name)) as f:
            expected[name] = f.read()
        os.remove(os.path.join(root, name))
    for rel in expected["trainLabels.txt"].split() + expected["valLabels.txt"].split():
        expected[rel] = cv2.imread(os.path.join(root, rel), cv2.IMREAD_UNCHANGED)
        os.remove(os.path.join(root, rel))
    return root, expected


def _stamps(root):
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(root) for f in fs}


@pytest.mark.process  # a pool of workers converts the labels
def test_converts_label_ids_and_writes_sorted_lists(download):
    root, expected = download
    summary = prepare_cityscapes(root, workers=2, progress=False)
    assert (summary.images, summary.labels_written, summary.labels_skipped) == (5, 5, 0)
    assert sorted(summary.lists_written) == sorted(LISTS)
    for name, value in expected.items():
        if name in LISTS:
            with open(os.path.join(root, name)) as f:
                assert f.read() == value
        else:
            assert np.array_equal(cv2.imread(os.path.join(root, name), cv2.IMREAD_UNCHANGED), value), name
    assert len(SegDataset(os.path.dirname(root), "val")) == 2


def test_second_run_writes_nothing(download):
    root, _ = download
    prepare_cityscapes(root, progress=False)
    before = _stamps(root)
    summary = prepare_cityscapes(root, progress=False)
    assert (summary.labels_written, summary.labels_skipped, summary.lists_written) == (0, 5, [])
    assert _stamps(root) == before
    assert prepare_cityscapes(root, force=True, progress=False).labels_written == 5


def test_missing_label_ids_is_named_and_the_tool_exits_non_zero(download, capsys):
    root, _ = download
    missing = "gtFine/val/gammaburg/gammaburg_000001_000019_gtFine_labelIds.png"
    os.remove(os.path.join(root, missing))
    assert _tool_main([root, "--workers", "1"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]  # the log lines come first
    assert error.startswith("error: 1 problem(s)") and missing in error and "\n" not in error
    assert not os.path.exists(os.path.join(root, "valImages.txt")), "no lists for an incomplete set"


def test_unreadable_label_ids_are_named(download):
    root, _ = download
    broken = os.path.join(root, "gtFine/train/alphaville/alphaville_000000_000019_gtFine_labelIds.png")
    with open(broken, "r+b") as f:
        f.truncate(40)
    with pytest.raises(UserError, match=f"cannot read {broken}"):
        prepare_cityscapes(root, progress=False)


def test_converted_copy_is_accepted_and_its_lists_kept(download):
    root, expected = download
    prepare_cityscapes(root, progress=False)
    for rel in expected:  # AI Studio style: trainIds only, lists present (here in another order)
        if rel not in LISTS:
            os.remove(os.path.join(root, rel.replace("labelTrainIds", "labelIds")))
    for name in ("valImages.txt", "valLabels.txt"):
        with open(os.path.join(root, name), "w") as f:
            f.write("".join(reversed(expected[name].splitlines(keepends=True))))
    os.remove(os.path.join(root, "trainLabels.txt"))
    summary = prepare_cityscapes(root, progress=False)
    assert (summary.labels_written, summary.labels_skipped, summary.lists_written) == (0, 5, ["trainLabels.txt"])
    with open(os.path.join(root, "valImages.txt")) as f:
        assert f.read() != expected["valImages.txt"]


def test_tool_prints_counts(download, capsys):
    root, _ = download
    assert _tool_main([root, "--workers", "1"]) == 0
    assert "5 images; 5 labels written, 0 up to date" in capsys.readouterr().out
