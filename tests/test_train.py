"""One-shot training: Algorithm 1's per-(seed, step, worker, m) draws, a 2-process torchrun (gloo) run equal to one
process playing both workers, exact resume after a stop, KD with a tiny local teacher, further training of an
extracted model, the loss proxy, and clear errors before any training starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from autotinybert import Arch, SearchSpace, SuperBertForMaskedLM, extract, save_extracted
from autotinybert.errors import UserError
from autotinybert.train import LossProxy, TrainConfigError, TrainSupernetConfig, train_model, train_supernet
from autotinybert.train.checkpoint import CheckpointError
from autotinybert.train.objectives import StudentModule, Teacher, TeacherError
from autotinybert.train.trainer import draw_archs

REPO = Path(__file__).resolve().parents[1]
SPACE = {"attention": "heads", "layers": [1, 2], "hidden": [16, 32, 16], "ffn": [32, 64, 32], "heads": [1, 2],
         "head_size": 16}
KD_SPACE = {"attention": "dims", "layers": [1, 2], "hidden": [16, 32, 16], "ffn": [32, 64, 32], "heads": 4,
            "qkv": [16, 32, 8]}
WORDS = "the a cat dog sat ran on under mat table quickly slowly red blue big small house garden tree".split()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    docs = ("\n".join(" ".join(rng.choice(WORDS, size=10)) + " ." for _ in range(6)) for _ in range(120))
    (root / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    return root


def base_config(root: Path, out: str, **kw) -> dict:
    return {"out": str(root / out), "corpus": [str(root / "corpus.txt")], "tokenizer_vocab_size": 100,
            "max_seq_length": 24, "cache_dir": str(root / "cache"), "space": SPACE, "batch_size": 8,
            "archs_per_step": 2, "max_steps": 6, "learning_rate": 3e-3, "val_fraction": 0.1, "val_max_sequences": 16,
            "eval_every": 3, "eval_sequences": 8, "checkpoint_every": 2, "threads": 1, "progress": False,
            "device": "cpu", **kw}


def step_records(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == "step"]


@pytest.fixture(scope="module")
def trained(root) -> Path:
    return train_supernet(base_config(root, "full"))


# ----- Algorithm 1's draws ---------------------------------------------------------------------
def test_workers_draw_different_archs_and_a_rerun_draws_the_same():
    space = SearchSpace.preset("cpu-mlm")
    w0 = [draw_archs(space, 0, step, 0, 3, False) for step in range(5)]
    w1 = [draw_archs(space, 0, step, 1, 3, False) for step in range(5)]
    assert w0 != w1
    assert w0 == [draw_archs(space, 0, step, 0, 3, False) for step in range(5)]
    assert len({a for archs in w0 for a in archs}) > 5  # fresh draws each step and m
    assert w0 != [draw_archs(space, 1, step, 0, 3, False) for step in range(5)]  # the seed matters
    sandwich = draw_archs(space, 0, 0, 0, 3, True)
    assert sandwich[:2] == [space.max_arch, space.min_arch]


def test_training_writes_a_loadable_supernet_folder_and_learns(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "train_config.json",
            "metrics.jsonl", "validation.safetensors", "checkpoints"} <= names
    supernet = SuperBertForMaskedLM.from_pretrained(trained)
    assert supernet.space.max_arch == Arch.parse("2-32-64-2-32")
    steps = step_records(trained)
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert all(len(r["archs"]) == 1 and len(r["archs"][0]) == 2 for r in steps)  # 1 worker x M=2
    evals = [r for r in map(json.loads, (trained / "metrics.jsonl").read_text().splitlines()) if r["event"] == "eval"]
    assert [e["step"] for e in evals] == [0, 3, 6]
    assert evals[-1]["val_loss_max"] < evals[0]["val_loss_max"] - 0.2
    assert len(list((trained / "checkpoints").iterdir())) == 2  # keep_checkpoints
    # the extract CLI path: the folder carries the tokenizer
    model = extract(supernet, "1-16-32-1-16")
    assert model.config.vocab_size == supernet.config.vocab_size


def test_loss_proxy_scores_every_arch_on_the_same_masks(trained):
    proxy = LossProxy(trained, max_sequences=8, batch_size=4, seed=0)
    big, small = proxy("2-32-64-2-32"), proxy("1-16-32-1-16")
    assert proxy("2-32-64-2-32") == big  # deterministic
    assert np.isfinite(big) and np.isfinite(small) and big != small
    evals = [r for r in map(json.loads, (trained / "metrics.jsonl").read_text().splitlines()) if r["event"] == "eval"]
    # the trainer's own eval (8 sequences, seed = run seed 0, batch 32) is the same quantity
    assert LossProxy(trained, max_sequences=8, batch_size=32)("2-32-64-2-32") == pytest.approx(
        evals[-1]["val_loss_max"], rel=1e-5)
    assert LossProxy(trained, max_sequences=8, seed=1)("2-32-64-2-32") != pytest.approx(big, rel=1e-6)
    with pytest.raises(UserError, match="cannot run"):
        proxy("3-32-64-2-32")


# ----- resume ------------------------------------------------------------------------------------
def test_stop_then_resume_gives_the_same_losses_and_weights(root, trained):
    config = base_config(root, "stopped", stop_after=3)
    run = train_supernet(config)
    assert [r["step"] for r in step_records(run)] == [1, 2, 3]
    with pytest.raises(UserError, match="not empty"):
        train_supernet({**config, "stop_after": None})
    train_supernet({**config, "stop_after": None, "resume": True})
    assert [r["loss"] for r in step_records(run)] == [r["loss"] for r in step_records(trained)]
    a, b = load_file(str(run / "model.safetensors")), load_file(str(trained / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_from_another_config_is_refused(root, trained):
    with pytest.raises(CheckpointError, match="learning_rate"):
        train_supernet(base_config(root, "full", learning_rate=1e-3, resume=True))
    with pytest.raises(CheckpointError, match="workers"):  # same keys, but 2 Algorithm-1 workers instead of 1
        train_supernet(base_config(root, "full", workers=2, resume=True))
    other_space = {**SPACE, "layers": [1, 3]}
    with pytest.raises(CheckpointError, match="space"):
        train_supernet(base_config(root, "full", space=other_space, resume=True))


# ----- two processes: one gradient all-reduce per step --------------------------------------------
@pytest.mark.slow
def test_two_process_torchrun_equals_one_process_playing_both_workers(root, tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(json.dumps(SPACE))  # JSON is YAML
    common = [f"corpus={root / 'corpus.txt'}", "tokenizer_vocab_size=100", "max_seq_length=24",
              f"cache_dir={root / 'cache'}", f"space={space_file}", "batch_size=8", "workers=2",
              "archs_per_step=2", "max_steps=3", "learning_rate=3e-3", "progress=false", "threads=1",
              "eval_every=100", "checkpoint_every=100", "device=cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(29500 + os.getpid() % 1000), "-m", "autotinybert",
                          "train-supernet", *common, f"out={tmp_path / 'two'}"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "autotinybert", "train-supernet", *common,
                          f"out={tmp_path / 'one'}"], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    start = SuperBertForMaskedLM.from_pretrained(tmp_path / "one")  # sanity: training moved the weights
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    runs = [step_records(tmp_path / name) for name in ("one", "two")]
    assert [r["archs"] for r in runs[0]] == [r["archs"] for r in runs[1]]
    assert all(r["archs"][0] != r["archs"][1] for r in runs[0])  # the two workers trained different sub-models
    assert [r["loss"] for r in runs[0]] == pytest.approx([r["loss"] for r in runs[1]], rel=1e-5)
    assert start.num_parameters() > 0


# ----- KD ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_dir(root, trained) -> Path:
    from transformers import BertConfig, BertModel

    from autotinybert.io import copy_tokenizer_files

    tok_vocab = len((trained / "vocab.txt").read_text().splitlines())
    out = root / "teacher"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=tok_vocab, hidden_size=24, num_hidden_layers=1, num_attention_heads=4,
                             intermediate_size=48)).save_pretrained(out)
    copy_tokenizer_files(trained, out)
    return out


def test_kd_training_with_a_tiny_local_teacher(root, teacher_dir):
    run = train_supernet(base_config(root, "kd", objective="kd", teacher=str(teacher_dir), tokenizer=str(teacher_dir),
                                     space=KD_SPACE, max_steps=4, eval_every=4))
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == "eval"]
    assert evals[-1]["val_loss_max"] < evals[0]["val_loss_max"]
    assert (run / "kd_projection.safetensors").is_file()
    proxy = LossProxy(run, max_sequences=8)
    assert proxy("2-32-64-4-32") == pytest.approx(evals[-1]["val_loss_max"], rel=1e-5)
    assert np.isfinite(proxy("1-16-32-4-16"))


def test_the_teacher_gets_no_gradient(teacher_dir, trained):
    from autotinybert.supernet import SuperBertConfig

    teacher = Teacher(teacher_dir)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    supernet = SuperBertForMaskedLM(SuperBertConfig(space=SearchSpace.from_dict(KD_SPACE), vocab_size=teacher.vocab_size))
    student = StudentModule(supernet, "kd", teacher.hidden)
    ids = torch.randint(5, teacher.vocab_size, (2, 12))
    mask = torch.ones_like(ids)
    out = teacher(ids, mask)
    assert not out.hidden.requires_grad and not out.scores.requires_grad
    loss = student(ids, mask, arch=Arch.parse("1-16-32-4-16"), teacher=out).loss
    loss.backward()
    assert all(p.grad is None for p in teacher.model.parameters())
    assert not any(p.requires_grad for p in teacher.model.parameters()) and not teacher.model.training
    assert student.projection.weight.grad[:, 16:].abs().sum() == 0 and student.projection.weight.grad.abs().sum() > 0
    assert all(torch.equal(v, teacher.model.state_dict()[k]) for k, v in before.items())


def test_teacher_mismatches_are_refused_before_training(root, teacher_dir, tmp_path):
    with pytest.raises(TeacherError, match="'dims'"):
        train_supernet(base_config(root, "x1", objective="kd", teacher=str(teacher_dir), tokenizer=str(teacher_dir)))
    with pytest.raises(TeacherError, match="heads"):
        train_supernet(base_config(root, "x2", objective="kd", teacher=str(teacher_dir), tokenizer=str(teacher_dir),
                                   space={**KD_SPACE, "heads": 2, "qkv": [16, 32, 8]}))
    with pytest.raises(TeacherError, match="vocab"):  # a freshly trained tokenizer of another size
        train_supernet(base_config(root, "x3", objective="kd", teacher=str(teacher_dir), space=KD_SPACE,
                                   tokenizer_vocab_size=80))
    with pytest.raises(TeacherError, match="cannot load"):
        train_supernet(base_config(root, "x4", objective="kd", teacher=str(tmp_path / "nope"), space=KD_SPACE))
    assert not (root / "x1").exists() and not (root / "x4").exists()


# ----- further training ----------------------------------------------------------------------------
def test_further_training_of_an_extracted_model(root, trained):
    supernet = SuperBertForMaskedLM.from_pretrained(trained)
    model_dir = save_extracted(extract(supernet, "1-32-64-2-32"), root / "extracted", tokenizer_dir=trained)
    run = train_model({"model": str(model_dir), **{k: v for k, v in base_config(root, "further").items()
                                                   if k not in ("space", "archs_per_step")}, "max_steps": 4})
    from transformers import AutoModelForMaskedLM

    trained_model = AutoModelForMaskedLM.from_pretrained(run)
    assert trained_model.config.arch == Arch.parse("1-32-64-2-32")
    steps = step_records(run)
    assert all(r["archs"] == [["1-32-64-2-32"]] for r in steps)
    assert steps[0]["lr"] == pytest.approx(3e-3 * 3 / 4)  # no warm-up: full LR at step 1, then linear decay
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == "eval"]
    assert evals[-1]["val_loss_model"] < evals[0]["val_loss_model"]
    assert (run / "tokenizer.json").is_file()
    from autotinybert.modelcard import read_metadata  # the model card: YAML metadata matching metrics.jsonl

    card = read_metadata(run)
    assert card["library_name"] == "transformers" and card["autotinybert"]["kind"] == "further-trained"
    assert card["autotinybert"]["training"]["steps"] == 4 and card["autotinybert"]["arch"] == "1-32-64-2-32"
    metrics = card["model-index"][0]["results"][0]["metrics"]
    assert metrics[0]["value"] == pytest.approx(evals[-1]["val_loss_model"])
    assert read_metadata(model_dir)["autotinybert"]["kind"] == "extracted"
    from autotinybert.data import prepare_corpus

    other = prepare_corpus(root / "corpus.txt", None, max_seq_length=24, cache_dir=root / "cache",
                           tokenizer_vocab_size=80, progress=False)
    with pytest.raises(UserError, match="vocab_size"):  # a tokenizer that does not fit the model
        train_model({"model": str(model_dir), **{k: v for k, v in base_config(root, "further2").items()
                                                 if k not in ("space", "archs_per_step")},
                     "tokenizer": str(other.tokenizer_dir)})
    assert not (root / "further2").exists()


# ----- configs and errors --------------------------------------------------------------------------
def test_config_errors_name_the_problem(root, tmp_path):
    with pytest.raises(TrainConfigError, match="bacth_size"):
        TrainSupernetConfig.from_dict({"bacth_size": 3})
    with pytest.raises(TrainConfigError, match="teacher"):
        TrainSupernetConfig(objective="kd")
    with pytest.raises(TrainConfigError, match="archs_per_step=2 trains only the max and the min arch"):
        TrainSupernetConfig(sandwich=True, archs_per_step=2)  # nothing in between would ever be trained
    assert TrainSupernetConfig(sandwich=True, archs_per_step=3).archs_per_step == 3
    with pytest.raises(TrainConfigError, match="divisible"):
        train_supernet(base_config(root, "e1", batch_size=6, workers=4))
    with pytest.raises(UserError, match="does not exist"):
        train_supernet(base_config(root, "e2", corpus=[str(tmp_path / "missing.txt")]))
    example = TrainSupernetConfig.load(REPO / "configs" / "train-supernet.yaml", values={"out": "x", "corpus": ["y"]})
    assert example.space == "cpu-mlm" and example.out == "x"
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("batch_size: 4\nnot_a_key: 1\n")
    with pytest.raises(TrainConfigError, match="not_a_key"):
        TrainSupernetConfig.load(yaml_file)


def test_cli_reports_errors_with_exit_code_2(root, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "autotinybert", "train-supernet", f"out={tmp_path / 'o'}",
                             f"corpus={tmp_path / 'missing'}"], env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "error:" in result.stderr and "does not exist" in result.stderr
    command = [sys.executable, "-m", "autotinybert", "prepare-corpus", f"corpus={root / 'corpus.txt'}",
               "tokenizer_vocab_size=100", "max_seq_length=24", f"cache_dir={tmp_path / 'cache'}",
               "val_fraction=0.1", "val_max_sequences=16"]
    first, second = (subprocess.run(command, env=env, capture_output=True, text=True) for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    assert json.loads(first.stdout)["reused"] is False and json.loads(second.stdout)["reused"] is True
    assert json.loads(second.stdout)["cache"] == json.loads(first.stdout)["cache"]


def test_resume_of_a_run_that_died_before_its_first_checkpoint_starts_it_again(root, trained):
    out = root / "died"
    out.mkdir()
    (out / "train_config.json").write_text("{}")  # what a run leaves when killed before step checkpoint_every
    run = train_supernet(base_config(root, "died", resume=True))
    assert [r["loss"] for r in step_records(run)] == [r["loss"] for r in step_records(trained)]
    stranger = root / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="no checkpoint"):
        train_supernet(base_config(root, "stranger", resume=True))
    assert (stranger / "notes.txt").read_text() == "mine"
