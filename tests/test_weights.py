"""Initial weights: ImageNet backbones from paddle.vision load by name; gaps are reported, clashes refused."""
import logging

import numpy as np
import paddle
import pytest

from danet import build_model
from danet.errors import UserError
from danet.weights import load_into


def test_paddle_vision_resnet_weights_fill_the_backbone(tmp_path, caplog):
    logging.getLogger("danet").addHandler(caplog.handler)  # the entry points stop propagation to the root logger
    vision = paddle.vision.models.resnet18(pretrained=False)
    path = str(tmp_path / "resnet18.pdparams")
    paddle.save(vision.state_dict(), path)
    model = build_model("resnet18", num_classes=5)
    load_into(model, path, strict=False)
    ours, theirs = model.state_dict(), vision.state_dict()
    np.testing.assert_array_equal(ours["backbone.layer4.1.conv2.0.weight"].numpy(),
                                  theirs["layer4.1.conv2.weight"].numpy())
    np.testing.assert_array_equal(ours["backbone.conv1.1._variance"].numpy(), theirs["bn1._variance"].numpy())
    backbone = [k for k in ours if k.startswith("backbone.")]
    assert len(backbone) == len([k for k in theirs if not k.startswith("fc.")])
    logging.getLogger("danet").removeHandler(caplog.handler)
    assert "keep their initial values" in caplog.text  # the head is not in the file, and the log says so


def test_backbone_weights_of_another_depth_are_refused(tmp_path):
    paddle.save(paddle.vision.models.resnet34(pretrained=False).state_dict(), str(tmp_path / "r34.pdparams"))
    with pytest.raises(UserError, match="unexpected"):
        load_into(build_model("resnet18", num_classes=5), str(tmp_path / "r34.pdparams"), strict=False)


def test_strict_load_names_what_is_missing(tmp_path):
    model = build_model("resnet18", num_classes=5)
    state = {k: v.numpy() for k, v in model.state_dict().items() if not k.startswith("head.cls_fused")}
    paddle.save(state, str(tmp_path / "partial.pdparams"))
    with pytest.raises(UserError, match="head.cls_fused"):
        load_into(build_model("resnet18", num_classes=5), str(tmp_path / "partial.pdparams"), strict=True)


def test_the_load_report_counts_what_was_loaded(caplog):
    """One report for every loader: the counts come from the match, not from the model's size."""
    from danet.weights import fit

    shapes = {"a": [2], "b": [3], "c": [4], "d": [5], "e": [6]}
    found = {"a": np.zeros(2), "b": np.zeros(3), "e": np.zeros(6)}
    logging.getLogger("danet").addHandler(caplog.handler)
    try:
        report = fit(shapes, found, "w.pdparams", partial=True).log("dygraph format")
    finally:
        logging.getLogger("danet").removeHandler(caplog.handler)
    assert (len(report.loaded), report.total, report.missing) == (3, 5, ["c", "d"])
    assert "loaded 3 of 5 tensors from w.pdparams (dygraph format)" in caplog.text
    assert "2 keep their initial values (e.g. c, d)" in caplog.text


def test_initial_weights_of_another_class_count_train_with_fresh_classifiers(tmp_path, caplog):
    """Fine-tuning a 19-class model on a 5-class data set: everything but the classifiers loads."""
    paddle.seed(1)
    trained = build_model("resnet18", num_classes=19)
    path = str(tmp_path / "cityscapes.pdparams")
    paddle.save(trained.state_dict(), path)
    model = build_model("resnet18", num_classes=5)
    before = model.state_dict()["head.cls_fused.weight"].numpy().copy()
    logging.getLogger("danet").addHandler(caplog.handler)
    try:
        report = load_into(model, path, strict=False)
    finally:
        logging.getLogger("danet").removeHandler(caplog.handler)
    assert sorted(report.missing) == sorted(k for k in model.state_dict() if ".cls_" in k)  # 3 classifiers x 2
    np.testing.assert_array_equal(model.state_dict()["head.cls_fused.weight"].numpy(), before)
    np.testing.assert_array_equal(model.state_dict()["head.pam_in.0.weight"].numpy(),
                                  trained.state_dict()["head.pam_in.0.weight"].numpy())
    assert "6 classifier tensors are for 19 classes, the model has 5: they start fresh" in caplog.text
    with pytest.raises(UserError, match="with another shape"):  # strict (eval, resume): still a mismatch
        load_into(build_model("resnet18", num_classes=5), path, strict=True)
