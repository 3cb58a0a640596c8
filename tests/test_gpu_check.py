"""danet-gpu-check on a machine without a GPU: it refuses in one line (so it cannot pass by mistake), and the code of
every check runs here on the CPU with small models (AMP off), one failing check leaving the others to run."""
import json
import os
import subprocess
import sys

import paddle
import pytest

from danet.gpucheck import checks_train, common, precision
from danet.tools import gpu_check

pytestmark = pytest.mark.filterwarnings("ignore:The program will return to single-card operation:UserWarning")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_GPU = gpu_check.gpu_unavailable_reason() is None
PADDLE3 = int(paddle.__version__.split(".")[0]) in (0, 3)
cpu_only = pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU: the tool runs instead of refusing")

# Each check's CPU-runnable core: the GPU profile's arguments, shrunk, AMP off (a no-op on a CPU), and
# SyncBatchNorm swapped for BatchNorm (no CPU kernel) so the comparison harness itself runs.
TINY = {
    "memory_train_769": dict(backbone="resnet18", size=(32, 32), batch=2),
    "memory_infer_1024x2048": dict(backbone="resnet18", size=(32, 64)),
    "train_dygraph_amp": dict(backbone="resnet18", size=(32, 32), batch=2, steps=2, amp=False),
    "train_executor_amp": dict(backbone="resnet18", size=(32, 32), batch=2, steps=2, amp=False),
    "pam_sdpa": dict(channels=16, side=9, batch=2),
    "syncbn_data_parallel": dict(backbone="resnet18", size=(32, 32), batch=2, sync=False),
    "export_cuda": dict(backbone="resnet18", size=(32, 48)),
    "inference_gpu": dict(backbone="resnet18", size=(32, 48)),
    "executor_fleet": dict(backbone="resnet18", size=(32, 32), batch=2, steps=2, amp=False),
}
SLOW = {"train_executor_amp", "syncbn_data_parallel", "export_cuda", "inference_gpu"}


def test_the_tiny_profile_covers_every_check():
    assert set(TINY) == set(gpu_check.CHECKS) == set(gpu_check.GPU_PROFILE)


@cpu_only
def test_without_a_gpu_it_refuses_in_one_line(tmp_path, capsys):
    assert gpu_check.main(["--json", str(tmp_path / "r.json")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("danet-gpu-check: nothing can be checked here: ") and "paddlepaddle-gpu" in err
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["ok"] is False and data["refused"] and data["checks"] == [] and data["cuda"] is None


@cpu_only
@pytest.mark.process
@pytest.mark.heavy
def test_the_script_exits_non_zero_without_a_traceback():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_check.py")], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def _expected(name):
    if name == "executor_fleet":  # the trainer refuses static data parallel without --cuda, before any GPU call
        return "failed", "runs on GPUs only"
    if name == "pam_sdpa" and not PADDLE3:
        return "skipped", "no scale argument"
    return "passed", ""


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.heavy) if n in SLOW else n for n in TINY])
def test_each_check_runs_its_core_on_the_cpu(name):
    result = gpu_check.run_check(name, "cpu", TINY[name])
    status, reason = _expected(name)
    assert (result.status, reason in result.reason) == (status, True), result.line()
    assert "\n" not in result.line() and paddle.in_dynamic_mode()


def test_training_checks_see_the_attention_kernels_and_finite_losses():
    details = gpu_check.check_train_dygraph("cpu", **TINY["train_dygraph_amp"])
    assert len(details["losses"]) == 2 and details["kernels"]["bmm"][2] > 0 and details["kernels"]["softmax"][2] > 0
    assert "attention kernels float32" in details["summary"]


def test_sdpa_is_compared_with_the_chunked_path_outputs_and_gradients():
    if not PADDLE3:
        with pytest.raises(gpu_check.Skipped):
            gpu_check.check_pam_sdpa("cpu", **TINY["pam_sdpa"])
        return
    details = gpu_check.check_pam_sdpa("cpu", **TINY["pam_sdpa"])
    assert details["native_path"] == "chunked"  # a CPU: the check forces sdpa (math backend) to compare
    assert set(details["differences"]) == {"inference", "training", "input_grad", "query_grad"}
    assert max(details["differences"].values()) <= common.SAME_TOLERANCE


@pytest.mark.heavy
def test_a_failing_check_does_not_stop_the_others(capsys):
    profile = dict(TINY, syncbn_data_parallel=dict(TINY["syncbn_data_parallel"], sync=True))  # no CPU kernel
    names = ["syncbn_data_parallel", "executor_fleet", "memory_infer_1024x2048"]
    results = gpu_check.run_checks(names, device="cpu", profile=profile)
    assert [r.status for r in results] == ["failed", "failed", "passed"]
    assert "sync_batch_norm" in results[0].reason and paddle.in_dynamic_mode()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [r.line() for r in results] and lines[0].startswith("syncbn_data_parallel: failed: ")


def test_the_json_summary(tmp_path, monkeypatch, capsys):
    fake = [gpu_check.Result("pam_sdpa", "passed", "native path sdpa", 1.5, {"native_path": "sdpa"}),
            gpu_check.Result("executor_fleet", "failed", "RuntimeError: NCCL error", 0.5),
            gpu_check.Result("inference_gpu", "skipped", "not here", 0.0)]

    def run_checks(names, device, echo=print):
        for result in fake:
            echo(result.line())
        return fake

    monkeypatch.setattr(gpu_check, "gpu_unavailable_reason", lambda: None)
    monkeypatch.setattr(gpu_check, "run_checks", run_checks)
    path = tmp_path / "out" / "summary.json"
    assert gpu_check.main(["--json", str(path)]) == 1  # a failed check
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[:3] == ["pam_sdpa: passed (native path sdpa)", "executor_fleet: failed: RuntimeError: NCCL error",
                         "inference_gpu: skipped: not here"]
    assert lines[3].startswith("1 passed, 1 failed, 1 skipped in ")
    data = json.loads(path.read_text())
    assert {k: data[k] for k in ("tool", "ok", "refused", "passed", "failed", "skipped", "device")} == {
        "tool": "danet-gpu-check", "ok": False, "refused": None, "passed": 1, "failed": 1, "skipped": 1,
        "device": "gpu:0"}
    assert data["paddle"] == paddle.__version__
    assert data["checks"][0] == {"name": "pam_sdpa", "status": "passed", "reason": "native path sdpa",
                                 "seconds": 1.5, "details": {"native_path": "sdpa"}}


def test_precision_rules():
    counts = precision.parse_kernel_counts({"pd_op.bmm": "0,0,4,0", "pd_op.softmax_": "0,0,1,0",
                                            "softmax": [0, 0, 1, 0], "bmm_grad": "0,0,4,0", "conv2d": "6,0,0,0"})
    assert counts == {"bmm": [0, 0, 8, 0], "softmax": [0, 0, 2, 0], "conv2d": [6, 0, 0, 0]}
    assert "convolutions in float16: 6" in precision.check_precision(counts, amp=True)
    with pytest.raises(gpu_check.Failed, match="bmm x2"):
        precision.check_precision(dict(counts, bmm=[2, 0, 6, 0]), amp=True)
    with pytest.raises(gpu_check.Failed, match="AMP did not run"):
        precision.check_precision(dict(counts, conv2d=[0, 0, 6, 0]), amp=True)
    with pytest.raises(gpu_check.Failed, match="no attention kernel"):
        precision.check_precision({"conv2d": [6, 0, 0, 0]}, amp=True)


def test_the_trainer_is_told_of_two_processes_once():
    real = paddle.distributed.get_world_size()
    with checks_train.pretend_world_size(2):
        assert paddle.distributed.get_world_size() == 2
        assert paddle.distributed.get_world_size() == real
    assert paddle.distributed.get_world_size() == real


def test_an_error_is_one_line():
    error = RuntimeError("(NotFound) The kernel `sync_batch_norm` is not registered.\n  [Hint: ...]\n\nC++ trace")
    assert gpu_check.one_line(error) == "RuntimeError: (NotFound) The kernel `sync_batch_norm` is not registered."
    from danet.errors import UserError

    assert gpu_check.one_line(UserError("add --cuda")) == "add --cuda"
