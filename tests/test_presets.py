"""Data set presets: a name brings classes, palette, label convention and sizes; each preset works end to end
(its official layout made small -> prepare -> train in both graph modes -> evaluate with its class names)."""
import importlib
import json

import numpy as np
import paddle
import pytest

from danet.data.cityscapes import SegDataset
from danet.data.presets import get_preset
from danet.errors import UserError
from danet.options import parse


def test_cityscapes_keeps_the_seeds_defaults():
    args = parse("train_dygraph", [])
    assert (args.dataset, args.num_classes, args.base_size, args.crop_size) == ("cityscapes", 19, 1024, 768)
    assert parse("eval", []).base_size == 1024  # the seed's eval default (long side at scale 1.0)
    assert get_preset("cityscapes").classes[:3] == ("road", "sidewalk", "building")


def test_a_reduce_zero_convention_ignores_raw_zero_and_shifts_the_rest(tmp_path):
    from danet.data.presets import reduce_zero_lut

    lut, valid = reduce_zero_lut(150)
    raw = np.array([[0, 1, 150, 255]], np.uint8)
    assert lut[raw].tolist() == [[255, 0, 149, 255]]
    assert not valid[151] and valid[150] and valid[255]


def test_flags_given_win_over_the_preset_and_contradictions_are_refused(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "classes.txt").write_text("sky 70 130 180\nground 81 0 81\n")
    args = parse("train_dygraph", ["--data_folder", str(tmp_path), "--dataset", "mine", "--crop_size", "64"])
    assert args.num_classes == 2 and args.crop_size == 64 and args.preset.classes == ("sky", "ground")
    assert args.preset.palette.tolist() == [[70, 130, 180], [81, 0, 81]]
    with pytest.raises(SystemExit):
        parse("train_dygraph", ["--data_folder", str(tmp_path), "--dataset", "mine", "--num_classes", "5"])
    assert "--num_classes 5 contradicts --dataset mine (2 classes)" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("", "expected a list of class names"),
    ("a 1 2\n", None),  # three fields: a name with spaces, no colour
    ("a 1 2 300\n", "0..255"),
    ('{"classes": ["a", "b"], "palette": [[1, 2, 3]]}', "per class"),
    ("{broken", "not valid JSON"),
])
def test_a_names_file_is_read_or_refused_by_file_and_line(tmp_path, content, message):
    name = "classes.json" if content.startswith("{") else "classes.txt"
    (tmp_path / name).write_text(content)
    if message is None:
        assert get_preset("x", str(tmp_path)).classes == ("a 1 2",)
        return
    with pytest.raises(UserError, match=message):
        get_preset("x", str(tmp_path))


def test_a_folder_of_no_preset_keeps_numbered_classes(tmp_path):
    preset = get_preset("other", str(tmp_path), num_classes=4)
    assert preset.numbered and preset.classes == ("0", "1", "2", "3")


# ------------------------------------------------------------------------------------------- end to end

PRESETS = {  # preset -> (data set module, make_synthetic keywords)
    "custom": ("custom", {}),
    "ade20k": ("ade20k", {}),
    "voc": ("voc", {}),
    "pascal_context": ("pascal_context", {}),
    "pascal_context_60": ("pascal_context", {}),
    "coco_stuff": ("coco_stuff", {"variant": "10k"}),
    "coco_stuff_164k": ("coco_stuff", {"variant": "164k"}),
}


def _train_here(entry, argv):
    from danet.train import main

    try:
        return main(entry, argv)
    finally:
        if not paddle.in_dynamic_mode():
            paddle.disable_static()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRESETS))
def test_a_preset_prepares_trains_in_both_modes_and_evaluates_with_its_names(name, tmp_path):
    from danet.eval import main as eval_main
    from danet.tools.prepare_dataset import prepare

    module_name, options = PRESETS[name]
    dataset = name if name in ("custom",) or not name.startswith("coco_stuff") else "coco_stuff"
    root = str(tmp_path / dataset)
    module = importlib.import_module(f"danet.data.datasets.{module_name}")
    module.make_synthetic(root, **options)
    summary = prepare(module_name, root, workers=1, progress=False)
    assert "trainLabels.txt" in summary.lists_written and "valLabels.txt" in summary.lists_written
    preset = get_preset(dataset, root)
    train = SegDataset(str(tmp_path), "train", dataset, preset=preset)
    for index in range(len(train)):
        _, label = train[index]
        assert set(np.unique(label)) <= set(range(preset.num_classes)) | {255}
    small = ["--backbone", "resnet18", "--base_size", "64", "--crop_size", "48", "--data_folder", str(tmp_path),
             "--dataset", dataset, "--num_workers", "0", "--threads", "1"]
    for mode in ("executor", "dygraph"):
        save_dir = tmp_path / f"run_{mode}"
        trainer = _train_here(f"train_{mode}", small + ["--epoch_num", "1", "--batch_size", "2", "--eval_interval",
                                                        "1", "--save_dir", str(save_dir)])
        assert trainer.iteration >= 1
        state = json.loads((save_dir / "epoch_0001" / "state.json").read_text())
        assert state["config"]["num_classes"] == preset.num_classes and state["dataset"]["name"] == dataset
    metrics = eval_main(small + ["--save_model", str(tmp_path / "run_dygraph"), "--output_dir", str(tmp_path / "eval"),
                                 "--save_predictions"])
    assert list(metrics["per_class_iou"]) == list(preset.classes)  # the table, JSON and CSV use the names
    assert (tmp_path / "eval" / "color").is_dir()


@pytest.mark.parametrize("name, module", [("ade20k", "ade20k"), ("voc", "voc")])
def test_weights_for_ade20k_and_voc_evaluate_with_their_class_names(name, module, tmp_path):
    """An ADE20K (150 classes) or VOC (21) model, as imported from mmsegmentation, scored on its data set."""
    from danet import build_model, checkpoint
    from danet.eval import main as eval_main
    from danet.tools.prepare_dataset import prepare

    root = str(tmp_path / name)
    importlib.import_module(f"danet.data.datasets.{module}").make_synthetic(root)
    prepare(name, root, workers=1, progress=False)
    preset = get_preset(name, root)
    model = build_model("resnet18", preset.num_classes)
    weights_file = str(tmp_path / "model.pdparams")
    checkpoint.save_arrays(weights_file, {k: v.numpy() for k, v in model.state_dict().items()})
    metrics = eval_main(["--save_model", weights_file, "--data_folder", str(tmp_path), "--dataset", name,
                         "--crop_size", "48", "--num_workers", "0", "--output_dir", str(tmp_path / "eval")])
    assert list(metrics["per_class_iou"]) == list(preset.classes) and len(preset.classes) == preset.num_classes
    with pytest.raises(UserError, match=f"predicts {preset.num_classes} classes but --dataset cityscapes has 19"):
        eval_main(["--save_model", weights_file, "--data_folder", str(tmp_path), "--dataset", "cityscapes",
                   "--output_dir", str(tmp_path / "eval2"), "--debug"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dygraph", "executor"])
def test_a_cityscapes_model_fine_tunes_on_a_data_set_of_other_classes(mode, tmp_path):
    from test_eval import random_checkpoint

    from danet.data.datasets import custom
    from danet.tools.prepare_dataset import prepare

    root = str(tmp_path / "mine")
    custom.make_synthetic(root)
    prepare("custom", root, workers=1, progress=False)
    pretrained = random_checkpoint(tmp_path / "cityscapes")  # 19 classes, ResNet-18
    save_dir = tmp_path / "tuned"
    trainer = _train_here(f"train_{mode}", ["--data_folder", str(tmp_path), "--dataset", "mine", "--pretrained",
                                            pretrained, "--base_size", "64", "--crop_size", "48", "--epoch_num", "1",
                                            "--batch_size", "2", "--num_workers", "0", "--eval_interval", "1",
                                            "--save_dir", str(save_dir)])
    assert trainer.iteration == 2
    log = (save_dir / "train.log").read_text()
    assert "are for 19 classes, the model has 3: they start fresh" in log
    assert json.loads((save_dir / "epoch_0001" / "state.json").read_text())["config"]["num_classes"] == 3
