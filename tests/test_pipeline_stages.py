"""Stage bookkeeping: skip completed stages, resume interrupted ones, invalidate downstream on config change;
overrides with clear errors; the demo's docstring data."""

import json

import pytest

from autotinybert.config import Config
from autotinybert.config import ConfigError, apply_overrides
from autotinybert.pipeline.config import PipelineConfig
from autotinybert.pipeline.stages import StageInputs, StageRunner


class Knobs(StageInputs):
    values: dict[str, int] = {}


class Value(Config):
    value: str


def make_stage(calls, name, fail=False):
    def fn(inputs, stage_dir, resume):
        calls.append((name, resume))
        (stage_dir / "partial.txt").write_text("x")
        if fail:
            raise KeyboardInterrupt  # a kill mid-stage
        return Value(value=name)
    return fn


def run_all(run_dir, configs, calls, fail_at=None):
    runner = StageRunner(run_dir, log=lambda line: None)
    for name, upstream in (("a", ()), ("b", ("a",)), ("c", ("b",))):
        runner.run(name, Knobs(values=configs[name]), make_stage(calls, name, fail_at == name), Value,
                   upstream=upstream)
    return runner


def test_skip_resume_and_invalidation(tmp_path):
    configs = {"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}}
    calls = []
    with pytest.raises(KeyboardInterrupt):
        run_all(tmp_path, configs, calls, fail_at="b")
    assert calls == [("a", False), ("b", False)]
    assert not (tmp_path / "b" / "DONE.json").exists()

    calls.clear()
    runner = run_all(tmp_path, configs, calls)
    assert calls == [("b", True), ("c", False)]  # a skipped, b resumed, c fresh
    assert runner.results["a"].skipped and runner.results["b"].resumed

    calls.clear()
    runner = run_all(tmp_path, configs, calls)
    assert calls == []  # everything done
    assert runner.results["c"].outputs == Value(value="c")  # read back from DONE.json as the outputs type

    calls.clear()
    configs["b"] = {"y": 5}
    run_all(tmp_path, configs, calls)
    assert calls == [("b", False), ("c", False)]  # b changed: b and c re-run, a untouched
    assert json.loads((tmp_path / "b" / "config.json").read_text())["config"] == {"values": {"y": 5}}


def test_progress_lists_only_the_stages_this_invocation_confirmed(tmp_path):
    configs = {"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}}
    run_all(tmp_path, configs, [])
    done = {name: json.loads((tmp_path / name / "DONE.json").read_text())["completion"] for name in "abc"}

    def progress():
        return json.loads((tmp_path / "progress.json").read_text())["stages"]

    assert progress() == done
    StageRunner(tmp_path, log=lambda line: None)
    assert progress() == {}  # a new invocation has confirmed nothing yet, though every DONE.json is on disk
    configs["b"] = {"y": 5}
    with pytest.raises(KeyboardInterrupt):
        run_all(tmp_path, configs, [], fail_at="b")  # redoing b: only a is confirmed, b's and c's records are stale
    assert progress() == {"a": done["a"]}


def test_a_stage_that_ran_again_invalidates_what_read_it(tmp_path):
    import shutil

    configs = {"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}}
    calls = []
    run_all(tmp_path, configs, calls)
    shutil.rmtree(tmp_path / "b")  # deleted by hand: b re-runs, and c read b's old outputs
    calls.clear()
    run_all(tmp_path, configs, calls)
    assert calls == [("b", False), ("c", False)]
    calls.clear()
    run_all(tmp_path, configs, calls)
    assert calls == []


def test_changed_config_of_an_interrupted_stage_starts_over(tmp_path):
    calls = []
    with pytest.raises(KeyboardInterrupt):
        run_all(tmp_path, {"a": {"x": 1}, "b": {}, "c": {}}, calls, fail_at="a")
    calls.clear()
    run_all(tmp_path, {"a": {"x": 2}, "b": {}, "c": {}}, calls)
    assert calls[0] == ("a", False)


def test_overrides():
    data = {"search": {"population": 25, "speedups": [4]}, "seed": 0}
    out = apply_overrides(PipelineConfig, data, ["search.population=10", "seed=3", "search.speedups=[4, 10]"])
    assert out == {"search": {"population": 10, "speedups": [4, 10]}, "seed": 3}
    assert data["search"]["population"] == 25
    with pytest.raises(ConfigError, match="unknown key 'search.populaton'"):
        apply_overrides(PipelineConfig, data, ["search.populaton=3"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        apply_overrides(PipelineConfig, data, ["seed"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        apply_overrides(PipelineConfig, data, ["seed=[1"])


def test_demo_docstring_data(tmp_path):
    from autotinybert.demo import build_demo_data

    data = build_demo_data(tmp_path, seed=0, train_pairs=200, dev_pairs=60)
    assert data.documents > 500 and data.words > 20_000
    text = data.corpus_file.read_text()
    assert "\n\n" in text and "<doc" not in text
    rows = (data.task_dir / "train.tsv").read_text().splitlines()
    assert rows[0] == "label\tsentence1\tsentence2" and len(rows) == 201
    labels = [r.split("\t")[0] for r in rows[1:]]
    assert labels.count("1") == labels.count("0") == 100
    assert all(len(r.split("\t")) == 3 for r in rows)
    dev = set((data.task_dir / "dev.tsv").read_text().splitlines()[1:])
    train_sentences = {s for r in rows[1:] for s in r.split("\t")[1:]}
    dev_sentences = {s for r in dev for s in r.split("\t")[1:]}
    # disjoint docstrings: a sentence may repeat across docstrings by chance, but only rarely
    assert len(train_sentences & dev_sentences) <= 0.02 * len(dev_sentences)
    again = build_demo_data(tmp_path / "again", seed=0, train_pairs=200, dev_pairs=60)
    assert (again.task_dir / "train.tsv").read_text() == (data.task_dir / "train.tsv").read_text()
