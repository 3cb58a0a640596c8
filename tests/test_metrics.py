"""Metrics: hand-made confusion matrices, ignored pixels, absent classes, accumulation, reports."""
import json
import math

import numpy as np
import pytest

from danet.metrics import ConfusionMatrix, compute, format_table, to_json_dict, write_csv

# Rows = ground truth, cols = prediction (DESIGN.md "Evaluation").
KNOWN = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])


def _pixels_of(matrix):
    """Flat (pred, label) pixel arrays that produce exactly ``matrix``."""
    truth, pred = [], []
    for t in range(len(matrix)):
        for p in range(len(matrix)):
            truth += [t] * int(matrix[t, p])
            pred += [p] * int(matrix[t, p])
    return np.array(pred), np.array(truth)


def test_known_matrix_gives_the_published_numbers():
    cm = ConfusionMatrix(3)
    cm.update(*_pixels_of(KNOWN))
    np.testing.assert_array_equal(cm.matrix, KNOWN)
    r = cm.summary()
    np.testing.assert_allclose(r["iou"], [0.625, 0.428571, 0.8], atol=1e-6)
    assert r["miou"] == pytest.approx(0.617857, abs=1e-6)
    assert r["pixel_accuracy"] == pytest.approx(0.75, abs=1e-6)
    assert r["kappa"] == pytest.approx(0.623529, abs=1e-6)
    np.testing.assert_allclose(r["dice"], [0.769231, 0.6, 0.888889], atol=1e-6)
    np.testing.assert_allclose(r["accuracy"], [5 / 6, 3 / 6, 4 / 4], atol=1e-12)
    np.testing.assert_allclose(r["precision"], [5 / 7, 3 / 4, 4 / 5], atol=1e-12)
    assert r["fwiou"] == pytest.approx((6 * 0.625 + 6 * 3 / 7 + 4 * 0.8) / 16, abs=1e-12)


def test_ignored_pixels_count_nowhere():
    pred = np.array([[0, 1], [2, 7]])  # a prediction under an ignored label is not checked either
    label = np.array([[0, 255], [255, 255]])
    cm = ConfusionMatrix(3)
    cm.update(pred, label)
    assert cm.matrix.sum() == 1 and cm.matrix[0, 0] == 1
    assert cm.summary()["pixel_accuracy"] == 1.0


def test_class_absent_from_prediction_and_label_is_nan_and_left_out_of_miou():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))  # class 2 appears nowhere
    r = cm.summary()
    assert math.isnan(r["iou"][2]) and math.isnan(r["accuracy"][2]) and math.isnan(r["dice"][2])
    assert r["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_predicted_but_absent_class_has_iou_zero():
    cm = ConfusionMatrix(2)
    cm.update(np.array([1, 1]), np.array([0, 0]))
    r = cm.summary()
    assert r["iou"].tolist() == [0.0, 0.0]
    assert math.isnan(r["accuracy"][1]) and r["mean_accuracy"] == 0.0


def test_several_updates_equal_one_update_of_everything():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 4, size=(5, 7)) for _ in range(3)]
    labels = [np.where(rng.random((5, 7)) < 0.2, 255, rng.integers(0, 4, size=(5, 7))) for _ in range(3)]
    step = ConfusionMatrix(4)
    for p, t in zip(preds, labels):
        step.update(p, t)
    whole = ConfusionMatrix(4)
    whole.update(np.concatenate(preds), np.concatenate(labels))
    np.testing.assert_array_equal(step.matrix, whole.matrix)
    assert step.matrix.dtype == np.int64


def test_merge_adds_counts_and_reset_clears():
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(*_pixels_of(KNOWN))
    b.update(*_pixels_of(KNOWN))
    a += b
    np.testing.assert_array_equal(a.matrix, 2 * KNOWN)
    assert a.summary()["miou"] == pytest.approx(compute(KNOWN)["miou"])
    with pytest.raises(ValueError, match="4-class"):
        a.merge(ConfusionMatrix(4))
    a.reset()
    assert a.matrix.sum() == 0


@pytest.mark.parametrize("pred, label, culprit", [
    ([0, 3], [0, 1], "prediction contains value 3"),
    ([0, 1], [0, 3], "label contains value 3"),
    ([0, 1], [-1, 1], "label contains value -1"),
    ([0.0, 1.0], [0, 1], "dtype float"),
])
def test_bad_values_raise_naming_them(pred, label, culprit):
    with pytest.raises(ValueError, match=culprit):
        ConfusionMatrix(3).update(np.array(pred), np.array(label))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(3).update(np.zeros((2, 3), int), np.zeros((3, 2), int))


def test_table_names_classes_and_shows_nan_as_na():
    matrix = np.zeros((4, 4), dtype=np.int64)
    matrix[:3, :3] = KNOWN
    text = format_table(compute(matrix), ["road", "sidewalk", "building", "wall"])
    lines = text.splitlines()
    for name in ("road", "sidewalk", "building", "wall"):
        assert any(line.startswith(name) for line in lines)
    assert "n/a" in next(line for line in lines if line.startswith("wall"))
    assert "0.6179" in next(line for line in lines if line.startswith("mIoU"))
    for key in ("pixel accuracy", "mean accuracy", "FWIoU", "kappa"):
        assert any(line.startswith(key) for line in lines)


def test_json_dict_is_serialisable_with_none_for_nan():
    matrix = np.zeros((4, 4), dtype=np.int64)
    matrix[:3, :3] = KNOWN
    names = ["a", "b", "c", "d"]
    data = json.loads(json.dumps(to_json_dict(compute(matrix), names)))
    assert data["per_class_iou"]["d"] is None and data["per_class_dice"]["d"] is None
    assert data["per_class_iou"]["a"] == pytest.approx(0.625)
    assert data["miou"] == pytest.approx(0.617857, abs=1e-6)
    assert data["confusion_matrix"][1] == [2, 3, 1, 0]
    for key in ("pixel_accuracy", "mean_accuracy", "fwiou", "kappa", "mean_dice"):
        assert isinstance(data[key], float)
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        to_json_dict(compute(matrix), names[:3])


def test_csv_has_one_row_per_class(tmp_path):
    path = tmp_path / "iou.csv"
    write_csv(path, compute(KNOWN), ["x", "y", "z"])
    rows = path.read_text().splitlines()
    assert rows[0].startswith("class_id,class,iou")
    assert rows[2].startswith("1,y,0.428571")
    assert len(rows) == 4
