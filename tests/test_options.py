"""The one argument parser: the seed's command lines keep their meaning, mistakes are errors, --help shows it all."""
import os
import re
import subprocess
import sys

import pytest

from danet.options import parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SEED_COMMAND = ("--backbone resnet101 --base_size 1024 --crop_size 768 --epoch_num 350 --batch_size 2 --lr 0.003 "
                "--lr_scheduler poly --warm_up --warmup_epoch 2 --cuda --use_data_parallel --load_pretrained_model "
                "--save_model x --dilated --multi_grid --scale --multi_dilation 4 8 16").split()

SEED_FLAGS = ["--backbone", "--dataset", "--num_classes", "--data_folder", "--base_size", "--crop_size", "--epoch_num",
              "--batch_size", "--lr", "--lr_scheduler", "--lr_pow", "--warm_up", "--warmup_epoch", "--step_per_epoch",
              "--momentum", "--weight_decay", "--cuda", "--use_data_parallel", "--seed", "--log_root", "--save_model",
              "--load_pretrained_model", "--load_better_model", "--dilated", "--multi_grid", "--multi_dilation",
              "--scale"]
NEW_FLAGS = ["--save_dir", "--resume", "--pretrained", "--num_workers", "--eval_interval", "--save_interval",
             "--log_iters", "--use_vdl", "--amp", "--no-dilated", "--threads"]


@pytest.mark.parametrize("entry", ["train_executor", "train_dygraph"])
def test_the_seed_command_line_parses_with_the_seed_meaning(entry):
    args = parse(entry, SEED_COMMAND)
    assert (args.backbone, args.base_size, args.crop_size, args.epoch_num, args.batch_size) == \
        ("resnet101", 1024, 768, 350, 2)
    assert (args.lr, args.lr_scheduler, args.warm_up, args.warmup_epoch) == (0.003, "poly", True, 2)
    assert args.cuda and args.use_data_parallel and args.load_pretrained_model and args.scale
    assert args.save_model == "x"
    assert args.dilated and args.multi_grid and args.multi_dilation == [4, 8, 16]


def test_dilated_is_on_by_default_and_can_be_turned_off():
    assert parse("train_dygraph", []).dilated
    assert not parse("train_dygraph", ["--no-dilated"]).dilated


def test_defaults_follow_the_seed_recipe():
    args = parse("train_executor", ["--batch_size", "8"])
    assert args.lr == pytest.approx(0.003)  # the seed's LR for a batch of 8, scaled per image
    assert (args.lr_scheduler, args.lr_pow, args.momentum, args.weight_decay) == ("poly", 0.9, 0.9, 1e-4)
    assert args.save_dir == os.path.join("checkpoint", "executor_resnet101")


def test_the_seed_typo_ploy_is_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        parse("train_dygraph", ["--lr_scheduler", "ploy"])
    assert e.value.code == 2
    assert "unknown --lr_scheduler 'ploy'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--multi_grid", "--multi_dilation", "4", "8"], "--multi_dilation needs 3 positive values"),
    (["--multi_grid", "--no-dilated"], "--multi_grid needs a dilated backbone"),
    (["--crop_size", "8"], "--crop_size 8 is too small"),
    (["--lr", "0"], "--lr must be positive"),
    (["--backbone", "resnet77"], "invalid choice: 'resnet77'"),
])
def test_flags_that_cannot_work_are_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse("train_executor", argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


SHARED_FLAGS = ["--backbone", "--num_classes", "--dilated", "--no-dilated", "--multi_grid", "--multi_dilation",
                "--data_folder", "--dataset", "--base_size", "--crop_size", "--num_workers", "--cuda", "--threads",
                "--seed", "--log_root", "--save_model", "--debug"]
PREDICTION_FLAGS = ["--multi_scales", "--scales", "--flip", "--stride_rate", "--window_batch"]
EVAL_FLAGS = ["--split", "--change_executor_to_dygraph", "--output_dir", "--save_predictions", "--pred_dir", "--limit"]


def _help(entry):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("OMP_NUM_THREADS", None)
    result = subprocess.run([sys.executable, "-m", f"danet.{entry}", "--help"], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no library notices (ccache, OMP_NUM_THREADS) around the help
    assert f"python -m danet.{entry}" in result.stdout
    return set(re.findall(r"^  (--[\w-]+)", result.stdout, re.M))  # flags that start a help entry


@pytest.mark.process
@pytest.mark.parametrize("entry", ["train_executor", "train_dygraph"])
def test_help_of_each_training_entry_point_shows_the_shared_flags(entry):
    described = _help(entry)
    assert not [f for f in SHARED_FLAGS + SEED_FLAGS + NEW_FLAGS + PREDICTION_FLAGS if f not in described]
    assert not described & set(EVAL_FLAGS)


@pytest.mark.process
def test_help_of_eval_shows_the_shared_flags_and_hides_training_ones():
    described = _help("eval")
    assert not [f for f in SHARED_FLAGS + PREDICTION_FLAGS + EVAL_FLAGS if f not in described]
    assert "--recompute" not in described  # a training memory setting: eval has nothing to do with it
    assert "--warm_up" not in described and "--epoch_num" not in described
    assert parse("eval", ["--warm_up", "--epoch_num", "3"]).warm_up  # still accepted: old command lines run


@pytest.mark.parametrize("entry, argv", [
    ("eval", ["--recompute"]),            # a memory setting of the backward pass: eval has none
    ("predict", ["--num_workers", "2"]),  # predict reads each image itself
    ("predict", ["--split", "val"]),
    ("export", ["--flip"]),               # export writes the model, it predicts nothing
    ("export", ["--data_folder", "x"]),
])
def test_an_entry_point_has_no_flag_it_would_ignore(entry, argv, capsys):
    from danet.options import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser(entry).parse_args(argv)
    assert e.value.code == 2 and f"unrecognized arguments: {argv[0]}" in capsys.readouterr().err


def test_training_accepts_the_prediction_flags_for_its_validation():
    args = parse("train_dygraph", ["--multi_scales", "--flip", "--stride_rate", "0.5"])
    assert args.multi_scales and args.flip and args.stride_rate == 0.5


def test_the_converter_has_no_recompute_flag(capsys):
    from danet.tools.convert import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["a", "b", "--recompute"])  # conversion does not run a backward pass
    assert "unrecognized arguments: --recompute" in capsys.readouterr().err


def test_the_benchmark_peer_script_ships_with_the_package():
    from danet.tools.benchmark_peer import find_peer_script

    script = find_peer_script()
    assert script.startswith(os.path.join(ROOT, "danet", "tools"))  # not a file outside the repository
    compile(open(script).read(), script, "exec")  # PaddleSeg's Python runs it as it is
