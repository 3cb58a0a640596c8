"""The benchmark runs end to end as a user runs it (tiny shapes: this checks that it works, not how fast)."""
import json

import pytest
from faultlib import run_entry

from danet.tools.benchmark import format_report, parse

MEASURED = ["train_dygraph", "train_static", "eval_whole", "eval_slide", "eval_inference", "eval_inference_onednn",
            "data"]


@pytest.mark.slow
@pytest.mark.process
def test_every_measurement_reports_a_rate_memory_and_the_exported_models_ratio(tmp_path):
    out = tmp_path / "report.json"
    result = run_entry("tools/benchmark.py", ["--backbone", "resnet18", "--crop_size", "32", "--iters", "1",
                                              "--eval_iters", "1", "--data_iters", "2", "--warmup", "0",
                                              "--threads", "1", "--json", out, "--only", *MEASURED], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert list(report["results"]) == MEASURED and "error" not in report["export"]
    for name, numbers in report["results"].items():
        assert "error" not in numbers, (name, numbers)
        rate = numbers.get("images_per_s", numbers.get("samples_per_s_per_core"))
        assert rate > 0 and numbers["s_per_iter"] > 0 and numbers["peak_rss_mib"] > 0, name
    assert report["config"]["backbone"] == "resnet18" and report["environment"]["cores"] >= 1
    table = format_report(report).splitlines()
    assert result.stdout.splitlines()[-len(table):] == table  # the console ends with the report it wrote (after logs)
    rows = {line.split()[0]: line.split() for line in table[2:]}
    assert list(rows) == MEASURED
    assert float(rows["eval_inference"][-1]) > 0  # the exported model's speed as a ratio to eval_whole


def test_flags_that_cannot_work_are_refused(capsys):
    for argv in (["--iters", "0"], ["--peer", "python", "--backbone", "resnet18"]):
        with pytest.raises(SystemExit) as stop:
            parse(argv)
        assert stop.value.code == 2
    assert "--iters must be at least 1" in capsys.readouterr().err
