"""`autotinybert latency measure|fit|bench` end to end on tiny archs."""

import json

import pytest

from autotinybert.cli import main
from autotinybert.latency import LatencyPredictor, read_dataset

TINY_SPACE = """\
name: tiny
attention: heads
layers: [1, 2]
hidden: [16, 64, 16]
ffn: [16, 128, 16]
heads: [1, 2]
head_size: 8
"""


def test_measure_fit_bench(tmp_path, capsys):
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    data = tmp_path / "lat.jsonl"
    args = ["latency", "measure", f"space={space}", "n=24", f"out={data}", "warmup=0",
            "repeats=1", "reference_every=100", "progress=false", "clock=cpu", "budget_s=0"]
    assert main(args) == 0
    assert "72 measured, 0 already there (24 archs x 3 passes)" in capsys.readouterr().out
    assert main(args) == 0  # rerun: everything is already there
    assert "0 measured, 72 already there" in capsys.readouterr().out
    assert len(read_dataset(data).records) == 24

    out = tmp_path / "pred.safetensors"
    assert main(["latency", "fit", str(data), f"out={out}", "kind=analytic", "folds=3"]) == 0
    text = capsys.readouterr().out
    assert "analytic" in text and "saved" in text
    predictor = LatencyPredictor.load(out)
    assert predictor.kind == "analytic" and predictor.device["clock"] == "cpu" and predictor.reference_ms > 0

    assert main(["latency", "bench", "1-32-64-2-32", "warmup=0", "repeats=1", "clock=cpu", "budget_s=0",
                 "as_json=true"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["arch"] for r in records] == ["1-32-64-2-32", "12-768-3072-12-768"]
    assert records[1]["is_reference"] and records[0]["median_ms"] < records[1]["median_ms"]
    assert records[0]["anchor"] == "1-128-512-2-128" and records[1]["median_ms"] / records[0]["median_ms"] == \
        pytest.approx(1 / records[0]["ratio"], rel=1e-4)

    # a predictor measured at other settings is refused before anything is timed
    assert main(["latency", "bench", "1-32-64-2-32", f"predictor={out}", "threads=2"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["latency", "bench", "1-32-64"], "3 field"),
    (["latency", "measure", "space=nope", "n=3", "out=x.jsonl"], "unknown search space"),
    (["latency", "fit", "missing.jsonl", "out=p.json"], "does not exist"),
])
def test_errors_are_user_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
