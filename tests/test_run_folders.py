"""Run folders on the real file system: a pipeline run killed mid-stage and then moved resumes in its new place; a
copy of a run reads its own files (the original deleted); touching the corpus re-runs nothing, editing it re-runs
tokenize and every stage after it (latency and predictor, which do not read it, are kept)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from autotinybert.cli import main
from autotinybert.demo import build_demo_data
from autotinybert.pipeline.config import PipelineConfig
from autotinybert.pipeline.plan import plan
from autotinybert.pipeline.stages import read_done
from test_pipeline_run import decisions, middle_speedup, run, tiny_config


def small_config(root: Path, out: Path) -> dict:
    """The pipeline tests' tiny config, lighter still, its cache inside the run folder (the default)."""
    config = tiny_config(root)
    config["out"] = str(out)
    config["data"]["cache_dir"] = None  # RUN_DIR/cache: the run folder holds everything it made
    config["search"].update(speedups=[round(middle_speedup())], fast=False)
    if "seeds" in config["finetune"]:
        config["finetune"]["seeds"] = 1
    return config


def downstream_of(config: dict, stage: str) -> set[str]:
    """`stage` and every stage that reads it, directly or not."""
    stages = plan(PipelineConfig.load(config))
    after = {stage}
    for s in stages:
        if set(s.upstream) & after:
            after.add(s.name)
    return after


def stage_names(config: dict) -> list[str]:
    return [s.name for s in plan(PipelineConfig.load(config))]


def recorded_paths(run_dir: Path) -> str:
    """Every stage record and the run's result, as text (what must not name another folder)."""
    files = [*run_dir.glob("*/DONE.json"), *run_dir.glob("*/config.json"), run_dir / "result.json"]
    return "\n".join(f.read_text() for f in files if f.is_file())


def test_moved_run_resumes_copy_reads_its_own_files_and_an_edited_corpus_reruns(tmp_path, monkeypatch):
    import autotinybert.train.trainer as trainer

    build_demo_data(tmp_path / "data", seed=0, train_pairs=200, dev_pairs=64)
    original = tmp_path / "original"
    config = small_config(tmp_path, original)

    # 1. killed right after the supernet's first checkpoint
    real = trainer.save_checkpoint

    def dies_after_first(out, *args, **kwargs):
        real(out, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", dies_after_first)
    with pytest.raises(KeyboardInterrupt):
        run(config, [])
    monkeypatch.setattr(trainer, "save_checkpoint", real)
    assert not (original / "supernet" / "DONE.json").exists()
    assert any((original / "supernet").rglob("step-*"))

    # 2. moved, then run from its new place: the finished stages are kept, the supernet resumes from its checkpoint
    moved = tmp_path / "moved"
    original.rename(moved)
    lines = []
    run({**config, "out": str(moved)}, lines)
    d = decisions(lines)
    assert d["tokenize"] == "done" and d["supernet"] == "resuming", d
    assert all(d[s] in ("running", "done") for s in stage_names(config) if s not in ("tokenize", "supernet"))
    assert str(original) not in recorded_paths(moved)
    for stage in stage_names(config):  # every recorded output path resolves inside the run folder
        done = read_done(moved, stage)
        paths = [v for v in json.dumps(done["outputs"]).split('"') if v.startswith(str(tmp_path))]
        assert all(p.startswith(str(moved)) for p in paths), (stage, paths)

    # 3. copied, the source deleted: the copy skips every stage and reads its own files
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy, symlinks=True)
    shutil.rmtree(moved)
    lines = []
    result = run({**config, "out": str(copy)}, lines)
    assert set(decisions(lines).values()) == {"done"}
    assert all(str(m.trained_dir or m.extracted_dir).startswith(str(copy)) for m in result.models)
    (copy / "report.md").unlink()
    assert main(["report", str(copy)]) == 0 and (copy / "report.md").is_file()

    # 4. the corpus touched (same bytes): nothing re-runs; edited: tokenize and everything after it re-run
    corpus = tmp_path / "data" / "corpus.txt"
    os.utime(corpus, (1_000_000_000, 1_000_000_000))
    lines = []
    run({**config, "out": str(copy)}, lines)
    assert set(decisions(lines).values()) == {"done"}
    with open(corpus, "a", encoding="utf-8") as handle:
        handle.write("\nA new document about reading files and writing them again.\nIt has two lines.\n")
    lines = []
    run({**config, "out": str(copy)}, lines)
    d = decisions(lines)
    rerun = downstream_of(config, "tokenize")
    assert {s for s, what in d.items() if what == "re-running"} == rerun
    assert {s for s, what in d.items() if what == "done"} == set(stage_names(config)) - rerun
    assert {"latency", "predictor"} <= set(stage_names(config)) - rerun
