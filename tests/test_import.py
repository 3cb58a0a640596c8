"""danet-import end to end: each partner implementation's own checkpoint becomes a checkpoint of this project that
evaluates, predicts, exports, converts and fine-tunes like a native one; foreign files also load directly.

The partner files are made by the partners' own code (``make partners``; their folder is ``DANET_PARTNER_DIR``).
"""
import json
import os
import re

import numpy as np
import paddle
import pytest

import danet
from danet import checkpoint, convert, weights
from danet.errors import UserError
from danet.tools.import_weights import import_checkpoint
from danet.tools.import_weights import main as import_main

PARTNER_FILES = {"mmseg": "mmseg_r50_d8.pth", "mmseg_769": "mmseg_r50_d8_769.pth", "ssseg": "ssseg_r50_d8.pth",
                 "ssseg_d16": "ssseg_r50_d16.pth", "paddleseg": "paddleseg_r50_os8.pdparams"}
OPTIONS = {"ssseg_d16": {"output_stride": 16}}  # no tensor shows the output stride: the flag says it


def partner(name):
    folder = os.environ.get("DANET_PARTNER_DIR")
    if not folder:
        pytest.fail("DANET_PARTNER_DIR is not set: run `make test` (it makes the partner checkpoints with "
                    "`make partners` and points the tests at them)")
    path = os.path.join(folder, PARTNER_FILES[name])
    if not os.path.isfile(path):
        pytest.fail(f"{path} is missing: run `make partners`")
    return path, dict(np.load(os.path.splitext(path)[0] + ".npz"))


def relative_error(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.partners
@pytest.mark.parametrize("name", list(PARTNER_FILES))
def test_an_imported_checkpoint_gives_the_partners_own_logits(name, tmp_path, capsys):
    src, expected = partner(name)
    out = str(tmp_path / "imported")
    argv = [src, out] + [f"--{k}={v}" for k, v in OPTIONS.get(name, {}).items()]
    import_main(argv)
    printed = capsys.readouterr().out
    assert "mapped" in printed and "dropped" in printed and f"wrote {out}" in printed
    if name.startswith("ssseg"):  # no names in the file: 19 classes are Cityscapes' for predict and export
        assert "classes: 19, Cityscapes' names and colours" in printed
    state = checkpoint.read_state(out)
    assert state["format"] == "dygraph" and state["imported"]["source"] == name.split("_")[0]
    model = danet.load_model(out)
    with paddle.no_grad():
        logits = model(paddle.to_tensor(expected["input"])).numpy()
    # float32: see test_import_torch_sources (the float64 proof of each map is there and in the PaddleSeg tests)
    assert relative_error(logits, expected["logits"]) <= 1e-4
    assert (logits.argmax(1) == expected["logits"].argmax(1)).mean() >= 0.999


@pytest.mark.partners
def test_a_foreign_file_loads_directly_without_importing(tmp_path):
    src, expected = partner("mmseg")
    model = danet.load_model(src)  # read, mapped and checked in memory
    with paddle.no_grad():
        logits = model(paddle.to_tensor(expected["input"])).numpy()
    assert relative_error(logits, expected["logits"]) <= 1e-4


@pytest.mark.partners
@pytest.mark.slow
@pytest.mark.process
def test_an_imported_checkpoint_evaluates_predicts_exports_converts_and_fine_tunes(tmp_path, data):
    from danet.eval import main as eval_main
    from danet.tools.export import main as export_main
    from danet.tools.predict import main as predict_main
    from danet.train import main as train_main

    src, _ = partner("paddleseg")  # the most foreign: deep stem, vd shortcuts, no halving, align mode 1, 0.5 norm
    out = str(tmp_path / "paddleseg")
    import_checkpoint(src, out)
    small = ["--base_size", "64", "--crop_size", "64"]
    metrics = eval_main(["--save_model", out, "--data_folder", data, "--output_dir", str(tmp_path / "eval"),
                         "--num_workers", "0", *small])
    assert metrics["settings"]["model"]["stem"] == "deep32" and metrics["settings"]["model"]["input_norm"] == "half"
    image = os.path.join(data, "cityscapes", "leftImg8bit", "val")
    written = predict_main(["--save_model", out, image, "--output_dir", str(tmp_path / "pred"), "--limit", "1"])
    assert any(p.endswith(".png") for p in written)
    report = export_main(["--save_model", out, "--output", str(tmp_path / "export" / "danet"), "--check_size", "40",
                          "56"])
    description = json.loads(open(str(tmp_path / "export" / "danet") + "_deploy.json").read())
    assert description["input"]["mean"] == [127.5] * 3 and description["input"]["input_norm"] == "half"
    assert all(os.path.isfile(f) for f in report["files"])  # export_model refuses logits off by > 1e-5 relative
    converted = convert.convert(out, str(tmp_path / "executor"))
    assert converted["format"] == "executor" and converted["max_abs_diff"] <= convert.TOLERANCE
    for mode in ("dygraph", "executor"):  # fine-tune one epoch: the variant comes from the checkpoint, no flags
        save_dir = tmp_path / f"tuned_{mode}"
        train_main(f"train_{mode}", ["--backbone", "resnet50", "--pretrained", out, "--data_folder", data,
                                     "--epoch_num", "1", "--batch_size", "2", "--num_workers", "0",
                                     "--eval_interval", "0", "--save_dir", str(save_dir), *small])
        if not paddle.in_dynamic_mode():
            paddle.disable_static()
        tuned = checkpoint.read_state(str(save_dir / "epoch_0001"))["config"]
        assert (tuned["stem"], tuned["avg_down"], tuned["align_mode"], tuned["input_norm"]) == ("deep32", True, 1,
                                                                                               "half")
        assert re.search(r"loaded (\d+) of \1 tensors from .*paddleseg", (save_dir / "train.log").read_text())


def test_an_unknown_layout_is_refused_naming_keys_and_nothing_is_written(tmp_path):
    path = str(tmp_path / "other.pdparams")
    checkpoint.save_arrays(path, {"encoder.block1.weight": np.zeros((4, 3, 3, 3), np.float32),
                                  "decoder.head.weight": np.zeros((2, 4, 1, 1), np.float32)})
    with pytest.raises(UserError, match=r"no known DANet layout has these keys \(e.g. decoder.head.weight"):
        import_checkpoint(path, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_our_own_checkpoint_is_not_imported(tmp_path):
    model = danet.build_model("resnet18", 5)
    path = str(tmp_path / "ours.pdparams")
    checkpoint.save_arrays(path, {k: v.numpy() for k, v in model.state_dict().items()})
    with pytest.raises(UserError, match="already a checkpoint of this project"):
        import_checkpoint(path, str(tmp_path / "out"))
    assert weights.read_weights(path).format == "dygraph"


@pytest.mark.heavy
@pytest.mark.parametrize("layout", ["tnum", "folder"])
def test_the_seeds_eval_command_line_reads_its_own_paddle1_files(layout, tmp_path, data):
    """The seed's README evaluation line, scaled down (ResNet-50, tiny images), on its 1.6 file and 1.5.2 folder."""
    from paddle1_writers import lod_tensor_file, seed_params, tnum_file, write

    from danet.eval import main as eval_main

    rng = np.random.default_rng(0)
    raw = {seed: (rng.standard_normal(shape) * 0.05).astype(np.float32) for seed, shape, _ in seed_params(50)}
    for seed_name, array in raw.items():
        if array.ndim == 1:  # BatchNorm scales and variances must be positive (biases may be too)
            raw[seed_name] = np.abs(array) + 0.5
    prefix = tmp_path / "checkpoint" / "DANet50_better_model_paddle1.6"
    if layout == "tnum":  # --save_model PREFIX reads PREFIX.pdparams, as the seed's fluid.load_dygraph did
        write(str(prefix) + ".pdparams", tnum_file(raw))
        save_model = str(prefix)
    else:
        save_model = str(tmp_path / "checkpoint" / "DANet50_better_model_paddle1.5.2")
        for name, array in raw.items():
            write(os.path.join(save_model, name), lod_tensor_file(array))
    metrics = eval_main(["--backbone", "resnet50", "--load_better_model", "--save_model", save_model,
                         "--base_size", "64", "--crop_size", "64", "--dilated", "--multi_grid", "--multi_dilation",
                         "4", "8", "16", "--data_folder", data, "--output_dir", str(tmp_path / "out"),
                         "--num_workers", "0"])
    assert metrics["settings"]["checkpoint_format"] == "seed"
    assert metrics["settings"]["model"]["multi_grid"] and metrics["settings"]["model"]["backbone"] == "resnet50"
    assert 0 <= metrics["miou"] <= 1


@pytest.mark.heavy
def test_dataset_names_the_classes_of_an_imported_file_and_must_match_its_count(tmp_path, capsys):
    from paddle1_writers import seed_params, tnum_file, write

    from danet.data.presets import get_preset
    from danet.deploy.description import classes_and_palette

    rng = np.random.default_rng(0)
    raw = {name: (rng.standard_normal(shape) * 0.05).astype(np.float32) for name, shape, _ in seed_params(50, 21)}
    raw = {name: np.abs(a) + 0.5 if a.ndim == 1 else a for name, a in raw.items()}  # positive BN variances
    src = str(tmp_path / "DANet50_voc.pdparams")
    write(src, tnum_file(raw))

    import_main([src, str(tmp_path / "numbered")])
    assert "classes: 21 numbered (add --dataset voc to name them)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        import_main([src, str(tmp_path / "ade"), "--dataset", "ade20k"])
    assert stop.value.code == 2 and not os.path.exists(tmp_path / "ade")
    assert "predicts 21 classes but --dataset ade20k has 150" in capsys.readouterr().err

    import_main([src, str(tmp_path / "voc"), "--dataset", "voc"])
    assert "classes: 21 named (background, aeroplane" in capsys.readouterr().out
    voc = get_preset("voc")
    names, palette = classes_and_palette(weights.read_weights(str(tmp_path / "voc")), 21)  # what predict/export use
    assert names == list(voc.classes) and palette == voc.palette.tolist()
    assert checkpoint.read_state(str(tmp_path / "voc"))["dataset"]["name"] == "voc"


@pytest.mark.partners
@pytest.mark.heavy
@pytest.mark.parametrize("name", ["mmseg", "ssseg_d16"])
def test_an_imported_torch_model_exports_for_paddle_inference(name, tmp_path):
    """oneDNN's fused convolutions put these models' logits about 1.2e-5 of the largest off: within the export's
    tolerance (1e-4 and the same clear classes), where a 1e-5 bound refused them."""
    from danet.tools.export import main as export_main

    src, _ = partner(name)
    out = str(tmp_path / "imported")
    import_checkpoint(src, out, **OPTIONS.get(name, {}))
    report = export_main(["--save_model", out, "--output", str(tmp_path / "export" / "danet")])
    assert all(os.path.isfile(f) for f in report["files"])  # written only when every check passed
