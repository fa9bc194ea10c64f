"""benchmarks/reproduction.py end to end on a tiny local BERT and the demo's docpair data: the pipeline (2 targets,
fast pick, both baselines, 2 fine-tuning seeds), Table 3 on 4 archs, Figure 5's three further-training runs, the
summary keys, the results page, and resume (a rerun trains nothing)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from autotinybert.demo import build_demo_data

from test_pipeline_init_from import config, make_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("reproduction", ROOT / "benchmarks" / "reproduction.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduction"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduction")
    build_demo_data(root / "data", seed=0, train_pairs=120, dev_pairs=48)
    make_checkpoint(root / "bert", root / "data" / "corpus.txt")
    cfg = config(root)
    cfg["latency"].update(budget_s=0, max_repeats=2)  # timing noise is not what this test checks
    cfg["search"].update(fast=True, top_k=2)  # one target (1.5x) keeps the test short
    cfg["further_train"]["top_k"] = 2
    cfg["finetune"]["seeds"] = 2
    yaml = root / "tiny.yaml"
    yaml.write_text(json.dumps(cfg))  # JSON is YAML
    rep = _module()
    plan = rep.Plan(name="tiny", run_dir=str(root / "repro"), config=str(yaml),
                    overrides=[f"out={root / 'repro' / 'pipeline'}"], cuts=["everything: a test"], n_archs=4,
                    ref_steps=2, ref_tasks=["docpair"], ref_seeds=2,
                    ref_finetune={"epochs": 1, "batch_size": 16, "max_seq_length": 32, "max_train_examples": 32,
                                  "max_eval_examples": 24, "learning_rate": 1e-3, "threads": 1, "save_model": "none",
                                  "progress": False},
                    proxy_tasks=["docpair"],
                    proxy_budget={"max_train_examples": 32, "max_steps": 2, "max_eval_examples": 24,
                                  "max_seq_length": 32, "batch_size": 16, "threads": 1},
                    larger_task="docpair", larger_seeds=2,
                    larger_finetune={"epochs": 1, "batch_size": 16, "max_seq_length": 32, "max_train_examples": 48,
                                     "max_eval_examples": 24, "learning_rate": 1e-3, "threads": 1,
                                     "save_model": "none", "progress": False},
                    curve_steps=4, curve_eval_every=2, jobs=2)
    first = rep.run(plan, root / "out.json", root / "docs" / "results.md", log=lambda line: None)
    second = rep.run(plan, root / "out2.json", root / "docs" / "results.md", log=lambda line: None)
    return rep, root, first, second


def test_summary_has_exactly_the_issue_keys(done):
    rep, root, first, _ = done
    result = json.loads((root / "out.json").read_text())
    assert tuple(result["summary"]) == rep.SUMMARY_KEYS
    s = result["summary"]
    # both baselines per target, paired by fine-tuning seed: numbers, with a spread over the 2 seeds
    for key in ("searched_minus_conventional_inherited", "searched_minus_conventional_scratch"):
        assert isinstance(s[key], float) and isinstance(s[f"{key}_seed_std"], float)
    assert 0 <= s["pairwise_accuracy_loss_proxy"] <= 1 and 0 <= s["pairwise_accuracy_finetune_proxy"] <= 1
    assert s["further_train_speedup_vs_scratch"] > 0
    assert s["retained_vs_teacher_2x"] is None  # the test's target is 1.5x
    assert {"benchmark", "summary", "rows", "settings", "machine", "versions"} <= set(result)


def test_parts(done):
    _, root, first, _ = done
    t1 = first["table1"]
    kinds = [r["kind"] for r in t1["rows"]]
    assert kinds == ["init", "searched", "fast", "conventional-inherited", "conventional-scratch"]
    assert all(len(p["per_seed"]) == 2 for p in t1["paired"])
    t3 = first["table3"]
    assert t3["status"] == "done" and t3["archs"] == 4 and t3["loss_proxy_vs_reference"]["n"] == 4
    assert t3["reference_seed0_vs_seed1"]["n"] == 4
    larger = first["table1_larger"]  # the close call again on a larger set: MiniLM + 3 kinds x 2 seeds
    assert larger["status"] == "done" and larger["train_examples"] == 48
    assert [r["kind"] for r in larger["rows"]] == ["init", "searched", "fast", "conventional-inherited"]
    assert all(len(r["per_seed"]) == 2 for r in larger["rows"])
    assert [(p["model"], p["baseline"]) for p in larger["paired"]] == [("searched", "conventional-inherited"),
                                                                      ("fast", "conventional-inherited")]
    assert [p["target"] for p in t1["per_target"] if p["model"] == "searched"] == ["1.5x", "1.5x"]
    f5 = first["figure5"]
    assert set(f5["curves"]) == {"superplm", "scratch", "checkpoint-no-supernet"}
    assert all(curve[-1][0] == 4 for curve in f5["curves"].values())  # same budget for the three starts
    stages = {r["stage"] for r in first["cost"] if r["part"] == "pipeline"}
    assert {"supernet", "further-train", "baselines", "finetune"} <= stages


def test_resume_does_no_new_training(done):
    _, root, first, second = done
    assert first["settings"]["pipeline_exit"] == second["settings"]["pipeline_exit"] == 0
    assert first["settings"]["new_work"] and second["settings"]["new_work"] == []
    assert all(s["skipped"] for s in second["settings"]["pipeline_stages"].values())
    assert second["summary"] == first["summary"]


def test_results_page(done):
    _, root, *_ = done
    page = (root / "docs" / "results.md").read_text()
    for heading in ("## Claims", "## Table 1 at CPU scale", "### docpair on a larger fine-tuning set", "## Table 3",
                    "## Figure 5", "## Cost"):
        assert heading in page
    assert "(results/reproduction-tiny.json)" in page
    assert (root / "docs" / "results" / "reproduction-tiny.json").is_file()
    for png in ("speedup_vs_score.png", "proxy_vs_reference.png", "further_training_curves.png"):
        assert f"(results/{png})" in page and (root / "docs" / "results" / png).stat().st_size > 1000


def test_table1_from_a_finetune_stage_in_progress(done, tmp_path):
    """Before the finetune stage finishes, Table 1 shows the fine-tunes finished so far: a model missing one seed of
    a task keeps that task's finished seed but gets no score; the init row is there from the extract stage."""
    import shutil

    rep, root, first, _ = done
    pipe = tmp_path / "pipeline"
    shutil.copytree(root / "repro" / "pipeline", pipe)
    (pipe / "finetune" / "DONE.json").unlink()
    searched = next(r for r in first["table1"]["rows"] if r["kind"] == "searched")
    (pipe / "finetune" / searched["model"] / "seed-1" / "docpair" / "result.json").unlink()
    t1 = rep.table1(pipe)
    assert t1["status"].startswith(rep.NOT_DONE) and not t1["finetuned"]
    rows = {r["kind"]: r for r in t1["rows"]}
    assert list(rows) == ["init", "searched", "fast", "conventional-inherited", "conventional-scratch"]
    assert rows["searched"]["score"] is None and rows["searched"]["docpair_std"] is None
    done_rows = [r for k, r in rows.items() if k != "searched"]
    for row in done_rows:  # the others: exactly the finished stage's numbers
        again = next(r for r in first["table1"]["rows"] if r["model"] == row["model"])
        assert row["docpair"] == again["docpair"] and row["score"] == again["score"]
    assert all(len(p["per_seed"]) == 1 for p in t1["paired"] if p["model"] == "searched")


def test_changed_finetune_settings_rerun_only_those_finetunes(tmp_path):
    """Editing the plan's reference fine-tuning settings removes every arch's fine-tunes (and their wall times) and
    keeps each further-trained model; the same settings again remove nothing."""
    rep = _module()
    folder = tmp_path / "table3" / "reference"
    for arch in ("2-32-64-2-32", "3-32-64-2-32"):
        (folder / arch / "trained").mkdir(parents=True)
        (folder / arch / "trained.done").write_text("{}")
        (folder / arch / "seed-0" / "sst2").mkdir(parents=True)
        (folder / arch / "seed-0.done").write_text("{}")
    work = rep.Work(tmp_path)
    work.record({"table3/train 2-32-64-2-32": 1.0, "table3/finetune 2-32-64-2-32 seed 0": 2.0})
    first = {"ref_tasks": ["sst2"], "ref_seeds": 1, "ref_finetune": {"learning_rate": 2e-5}, "ref_task_configs": {}}
    logged = []

    def fresh(inputs):
        rep.fresh_outputs(folder / "finetune.json", inputs, sorted(folder.glob("*/seed-*")), work,
                          "table3/finetune ", log=logged.append)

    fresh(first)  # never recorded: the old fine-tunes go
    assert sorted(p.name for p in (folder / "2-32-64-2-32").iterdir()) == ["trained", "trained.done"]
    assert list(work.jobs) == ["table3/train 2-32-64-2-32"] and len(logged) == 1
    (folder / "2-32-64-2-32" / "seed-0.done").write_text("{}")
    fresh(first)  # unchanged: kept
    assert (folder / "2-32-64-2-32" / "seed-0.done").is_file() and len(logged) == 1
    fresh({**first, "ref_finetune": {"learning_rate": 1e-4}})
    assert not (folder / "2-32-64-2-32" / "seed-0.done").exists()
    assert (folder / "3-32-64-2-32" / "trained.done").is_file() and len(logged) == 2
    assert json.loads((folder / "finetune.json").read_text())["ref_finetune"] == {"learning_rate": 1e-4}


def test_step_seconds_counts_each_step_once_across_a_resume(tmp_path):
    rep = _module()
    assert rep.step_seconds(tmp_path) is None  # no training run: no column
    run = tmp_path / "stage" / "model"
    run.mkdir(parents=True)
    events = [{"event": "step", "step": 1, "seconds": 2.0}, {"event": "step", "step": 2, "seconds": 9.0},
              {"event": "eval", "step": 2, "val_loss_model": 1.0},
              # killed after step 2, resumed from the step-1 checkpoint: step 2 re-logged, then step 3
              {"event": "step", "step": 2, "seconds": 3.0}, {"event": "step", "step": 3, "seconds": 10.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert rep.step_seconds(tmp_path / "stage") == {"train_s": 15.0, "at_median_s": 9.0}  # 2 + 3 + 10; median 3 x 3


def test_more_larger_set_seeds_add_runs_and_keep_the_finished_ones(done):
    _, root, first, _ = done
    rep = _module()  # the module the worker processes import (another test may have loaded it again)
    run_dir = root / "repro"
    marker = run_dir / "table1-larger" / "init" / "seed-0.done"
    before = marker.stat().st_mtime_ns
    plan = rep.Plan(**{**first["settings"]["plan"], "larger_seeds": 3})
    larger = rep.table1_larger(plan, run_dir / "pipeline", run_dir, rep.Work(run_dir), run=True)
    assert marker.stat().st_mtime_ns == before  # seed 0 was not run again
    assert larger["status"] == "done" and all(len(r["per_seed"]) == 3 for r in larger["rows"])
    assert [r["per_seed"][:2] for r in larger["rows"]] == [r["per_seed"] for r in first["table1_larger"]["rows"]]
