"""`run_pipeline` end to end on a shrunk demo config: outputs exist and load; reruns skip; a config change re-runs
only what it touches; a kill mid-stage resumes; bad keys fail before any stage starts."""

import json

import pytest
import torch

from autotinybert.cli import main
from autotinybert.demo import build_demo_data
from autotinybert.pipeline.config import ConfigError, PipelineConfig
from autotinybert.pipeline.report import final_table
from autotinybert.pipeline.run import run_pipeline

SPACE = {"attention": "heads", "layers": [1, 3], "hidden": [16, 48, 16], "ffn": [32, 192, 32], "heads": [1, 3],
         "head_size": 16}
STAGES = ["tokenize", "supernet", "latency", "predictor", "search-200x", "extract", "further-train", "finetune"]


def tiny_config(root):
    return {
        "out": str(root / "run"), "seed": 0, "progress": False,
        "data": {"corpus": [str(root / "data" / "corpus.txt")], "downstream": str(root / "data"),
                 "tokenizer_vocab_size": 300, "max_seq_length": 32, "val_max_sequences": 64,
                 "cache_dir": str(root / "cache")},
        "supernet": {"space": SPACE, "batch_size": 8, "archs_per_step": 2, "lr": 2e-3, "max_steps": 6,
                     "eval_every": 6, "eval_sequences": 16, "checkpoint_every": 3, "threads": 1},
        "latency": {"archs": 20, "warmup": 1, "repeats": 2, "seq_len": 32, "clock": "cpu", "baseline_head_size": 16},
        "predictor": {"kind": "analytic", "folds": 3},
        # the target is set per machine in the test; a wide window keeps the tiny space admissible on any host
        "search": {"speedups": [200], "window": [0.4, 2.5], "evaluator": "loss", "loss_max_sequences": 16,
                   "population": 4, "generations": 2, "top_k": 1, "threads": 1, "plot": False},
        "further_train": {"batch_size": 8, "max_steps": 4, "eval_every": 4, "eval_sequences": 16,
                          "checkpoint_every": 4, "threads": 1},
        "finetune": {"tasks": ["docpair"],
                     "config": {"learning_rate": 1e-3, "epochs": 1, "batch_size": 16, "max_seq_length": 32,
                                "max_train_examples": 64, "max_eval_examples": 32, "threads": 1}},
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
                           clock="cpu")
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

    # one searched + one conventional model per target, scored on the task
    assert [m.kind for m in result.models] == ["searched", "conventional"]
    conv = result.models[1]
    assert conv.arch.split("-")[2] == str(4 * int(conv.arch.split("-")[1]))  # BERT's rule: ffn = 4 hidden
    for m in result.models:
        assert set(m.scores) == {"docpair"} and 0.0 <= m.scores["docpair"] <= 1.0
        assert m.measured_ms > 0 and m.predicted_ms > 0

    # the report, its plots and the fine-tuned model folder exist and load
    report = (run_dir / "report.md").read_text()
    assert "searched" in report and "conventional" in report and conv.arch in report
    import matplotlib.image as mpimg
    for png in ("speedup_vs_score.png", "search_progress.png", "predictor_fit.png"):
        assert mpimg.imread(run_dir / "report" / png).ndim == 3
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model_dir = result.models[0].finetuned_dirs["docpair"]
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        logits = model(**tok(["Return the value."], ["Open the file."], return_tensors="pt")).logits
    assert logits.shape == (1, 2)
    assert result.models[0].name in final_table(run_dir)
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
    assert [d[s] for s in stages[:6]] == ["done"] * 6
    assert d["further-train"] == "re-running" and d["finetune"] == "re-running"

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
    run(config, lines)
    d = decisions(lines)
    assert d["finetune"] == "resuming" and d["further-train"] == "done"
    first = json.loads((run_dir / "finetune" / "searched-" f"{speedup}x" / "suite.json").read_text())
    assert first["tasks"]["docpair"]["resumed"] is True  # the model finished before the kill is read back


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
])
def test_bad_keys_fail_before_any_stage(demo_root, tmp_path, override, key):
    config = tiny_config(demo_root)
    config["out"] = str(tmp_path / "never")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_pipeline(config, [override], log=lambda line: None)
    assert not (tmp_path / "never").exists()


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
    assert config.raw["supernet"]["space"] == name.split("-")[1] if name.startswith("paper") else name
    with pytest.raises(ConfigError, match="data.corpus"):
        PipelineConfig.load(path, ["data.corpus=/no/such/corpus"])


def test_demo_command_runs_the_packaged_config(tmp_path, capsys):
    """`autotinybert demo` with the packaged demo.yaml, its budgets shrunk by overrides."""
    out = tmp_path / "demo"
    shrink = ["supernet.max_steps=4", "supernet.eval_every=4", "latency.archs=20", "latency.repeats=2",
              "latency.warmup=1", "search.population=4", "search.generations=1", "search.window=[0.3,3.0]",
              "further_train.max_steps=2", "further_train.eval_every=2", "finetune.config.epochs=1",
              "finetune.config.max_train_examples=64", "finetune.config.max_eval_examples=32", "progress=false"]
    assert main(["demo", "--out", str(out), *shrink]) == 0
    printed = capsys.readouterr().out
    assert "searched-160x" in printed and "conventional-220x" in printed and "from_pretrained(" in printed
    assert (out / "data" / "docpair" / "train.tsv").is_file() and (out / "report.md").is_file()
    model_dir = printed.split("fine-tuned model (")[1].split("): ")[1].splitlines()[0]
    from transformers import AutoModelForSequenceClassification
    assert AutoModelForSequenceClassification.from_pretrained(model_dir).config.num_labels == 2
