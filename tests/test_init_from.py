"""init_from: a SuperBERT started from a pre-trained BERT (tiny checkpoints built here), importance ordering,
depth rules, KD from the checkpoint, clear errors before any work, and resume after a real SIGKILL both during
the calibration and during training."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import (AutoModel, AutoModelForMaskedLM, BertConfig, BertForMaskedLM, BertForPreTraining,
                          BertModel, BertTokenizerFast)

from autotinybert import Arch, AutoTinyBertConfig, AutoTinyBertForMaskedLM, AutoTinyBertModel, SearchSpace, extract
from autotinybert.config import ConfigError
from autotinybert.errors import UserError
from autotinybert.importance import ordering_from_scores
from autotinybert.pretrained import InitFromError, inspect_checkpoint, load_checkpoint, supernet_state
from autotinybert.space import space_from_arch
from autotinybert.supernet import SuperBertConfig, SuperBertForMaskedLM
from autotinybert.train import TrainSupernetConfig, train_supernet
from autotinybert.train.init_from import (DEFAULT_DEPTH_RULE, DEFAULT_IMPORTANCE, Calibration, calibrate,
                                          calibration_model)
from autotinybert.train.objectives import StudentModule, Teacher

REPO = Path(__file__).resolve().parents[1]
WORDS = "the a cat dog sat ran on under mat table quickly slowly red blue big small house garden tree".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + WORDS + ["."] + [f"w{i}" for i in range(16)]
CKPT = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64)  # 3-32-64-4-32, head size 8
KINDS = {  # kind -> (has an MLM head, sub-folder of the BERT)
    "BertModel": (False, ""), "BertForMaskedLM": (True, ""), "BertForPreTraining": (True, ""),
    "sentence-transformers": (False, ""), "sentence-transformers-0_Transformer": (False, "0_Transformer"),
    "AutoTinyBertForMaskedLM": (True, ""), "AutoTinyBertModel": (False, ""),
}


def write_tokenizer(folder: Path, vocab: list[str] = VOCAB) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)


def roughen(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial LayerNorms and biases, so that ordering / slicing mistakes cannot hide behind 1s and 0s."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.mul_(1 + torch.rand(p.shape, generator=g))  # uneven magnitudes: importance has something to rank


def make_checkpoint(folder: Path, kind: str = "BertModel", seed: int = 0, vocab: list[str] = VOCAB, **config) -> Path:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), **{**CKPT, **config})
    if kind.startswith("AutoTinyBert"):
        tiny = AutoTinyBertConfig.from_arch(f"{cfg.num_hidden_layers}-{cfg.hidden_size}-{cfg.intermediate_size}-4-16",
                                            vocab_size=len(vocab), max_position_embeddings=64)
        model = (AutoTinyBertForMaskedLM if kind.endswith("MaskedLM") else AutoTinyBertModel)(tiny)
    else:
        cls = {"BertForMaskedLM": BertForMaskedLM, "BertForPreTraining": BertForPreTraining}.get(kind, BertModel)
        model = cls(cfg)
    roughen(model, seed)
    sub = KINDS.get(kind, (False, ""))[1]
    model.save_pretrained(folder / sub)
    write_tokenizer(folder / sub, vocab)
    if kind.startswith("sentence-transformers"):
        (folder / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": sub, "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("init_from")
    rng = np.random.default_rng(0)
    docs = ("\n".join(" ".join(rng.choice(WORDS, size=int(rng.integers(4, 14)))) + " ." for _ in range(6))
            for _ in range(150))
    (root / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    make_checkpoint(root / "bert")
    return root


def batch(seed: int = 1, B: int = 3, T: int = 12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL), len(VOCAB), (B, T), generator=g)
    ids[:, 0] = 2
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 8:] = 0  # padding present
    mask[2, 5:] = 0
    return ids, mask


def reference(folder: Path, sub: str = ""):
    return AutoModel.from_pretrained(folder / sub, attn_implementation="eager").eval()  # eager returns attentions


def run_config(root: Path, out: Path, **kw) -> dict:
    return {"out": str(out), "corpus": [str(root / "corpus.txt")], "init_from": str(root / "bert"),
            "max_seq_length": 16, "cache_dir": str(root / "cache"), "batch_size": 8, "archs_per_step": 2,
            "max_steps": 4, "learning_rate": 1e-3, "val_fraction": 0.1, "val_max_sequences": 16, "eval_every": 2,
            "eval_sequences": 8, "checkpoint_every": 2, "threads": 1, "progress": False, "device": "cpu",
            "calibration_batches": 3, **kw}


# ----- loading ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_supported_folder_kind_loads_and_the_supernet_reproduces_it(kind, tmp_path):
    folder = make_checkpoint(tmp_path / kind, kind)
    has_head, sub = KINDS[kind]
    info = inspect_checkpoint(str(folder))
    assert info.subfolder == sub and info.kind.startswith("sentence-transformers") == kind.startswith("sentence")
    assert info.tokenizer == str(folder / sub)
    ckpt = load_checkpoint(info)
    assert ckpt.has_mlm_head == has_head
    for cut in ("heads", "dims"):
        config = SuperBertConfig(space=space_from_arch(info.arch, cut), vocab_size=len(VOCAB),
                                 max_position_embeddings=64)
        supernet = SuperBertForMaskedLM(config).eval()
        missing, unexpected = supernet.load_state_dict(supernet_state(ckpt, config), strict=False)
        assert not unexpected and all(k.startswith("cls.") for k in missing) and bool(missing) != has_head
        ids, mask = batch()
        with torch.no_grad():
            ours = supernet(ids, mask, arch=info.arch, output_hidden_states=True, return_logits=True)
            theirs = reference(folder, sub)(ids, attention_mask=mask, output_hidden_states=True)
            assert max(float((a - b).abs().max()) for a, b in zip(ours.hidden_states, theirs.hidden_states)) <= 1e-5
            if has_head:
                logits = AutoModelForMaskedLM.from_pretrained(folder).eval()(ids, attention_mask=mask).logits
                assert float((ours.logits - logits).abs().max()) <= 1e-4


# ----- importance ordering -----------------------------------------------------------------------------------
def calibration_for(folder: Path, objective: str = "kd", batches: int = 4, seed: int = 0):
    ckpt = load_checkpoint(str(folder))
    teacher = Teacher(str(folder)) if objective == "kd" else None
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    rng = np.random.default_rng(seed)
    train = rng.integers(len(SPECIAL), len(VOCAB), size=(40, 12))
    train[:, 0], train[::3, 7:] = 2, 0  # [CLS] first; every third sequence padded
    corpus = SimpleNamespace(train=train, tokenizer=tokenizer, pad_token_id=0)
    model = calibration_model(ckpt, (0.1, 0.1), 0)
    module = StudentModule(model, objective, teacher.hidden if teacher else None)
    if module.projection is not None:  # the checkpoint is its own teacher: the exact map back
        from autotinybert.importance import Ordering, self_distillation_projection

        with torch.no_grad():
            module.projection.weight.copy_(self_distillation_projection(32, 32, Ordering.identity(ckpt.arch)))
            module.projection.bias.zero_()
    return ckpt, Calibration(module, corpus, teacher, objective=objective, batches=batches, batch_size=8, seed=seed,
                             device=torch.device("cpu"))


@pytest.fixture(scope="module")
def scores(root):
    """Both scores and the layer ranking of the tiny checkpoint, with the KD objective (the checkpoint teaches)."""
    ckpt, calibration = calibration_for(root / "bert")
    return ckpt, calibrate(ckpt, calibration, ["taylor", "activation"], rank_depth=True)


def test_scores_rank_something_and_the_layer_ranking_is_a_permutation(scores):
    ckpt, result = scores
    for method, s in result["scores"].items():
        for unit in ("heads", "qk", "vo", "ffn", "hidden"):
            values = getattr(s, unit)
            assert torch.isfinite(values).all() and values.min() >= 0, (method, unit)
            assert values.std() > 0, (method, unit)  # self-distillation under dropout: Taylor is not all zero
    assert sorted(result["layer_ranking"]) == [0, 1, 2]
    assert [t["removed"] for t in result["layer_trace"]] == result["layer_ranking"][::-1][:2]


@pytest.mark.parametrize("method", ["taylor", "activation"])
@pytest.mark.parametrize("cut", ["heads", "dims"])
def test_reordering_preserves_the_function(root, scores, cut, method):
    ckpt, result = scores
    ordering = ordering_from_scores(result["scores"][method], ckpt.arch, cut, method, result["layer_ranking"])
    assert not torch.equal(ordering.hidden, torch.arange(32))  # something moved
    config = SuperBertConfig(space=space_from_arch(ckpt.arch, cut), vocab_size=len(VOCAB), max_position_embeddings=64)
    supernet = SuperBertForMaskedLM(config).eval()
    supernet.load_state_dict(supernet_state(ckpt, config, ordering), strict=False)
    ids, mask = batch()
    with torch.no_grad():
        ours = supernet(ids, mask, arch=ckpt.arch, output_hidden_states=True, output_attentions=True)
        theirs = reference(root / "bert")(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    # the hidden channels come out in the ordered order: ordering.hidden[k] is the checkpoint's channel k
    worst = max(float((a - b[..., ordering.hidden]).abs().max()) for a, b in zip(ours.hidden_states,
                                                                                theirs.hidden_states))
    assert worst <= 1e-4
    if cut == "dims":  # heads keep their place: attention maps are the checkpoint's, head by head
        assert float((ours.attentions - theirs.attentions[-1]).abs().max()) <= 1e-5


def test_mlm_calibration_orders_a_checkpoint_with_its_head(tmp_path):
    folder = make_checkpoint(tmp_path / "mlm", "BertForMaskedLM")
    ckpt, calibration = calibration_for(folder, "mlm", batches=2)
    result = calibrate(ckpt, calibration, ["taylor"], rank_depth=False)
    ordering = ordering_from_scores(result["scores"]["taylor"], ckpt.arch, "heads", "taylor")
    config = SuperBertConfig(space=space_from_arch(ckpt.arch, "heads"), vocab_size=len(VOCAB),
                             max_position_embeddings=64)
    supernet = SuperBertForMaskedLM(config).eval()
    supernet.load_state_dict(supernet_state(ckpt, config, ordering))  # strict: the head is there
    ids, mask = batch()
    with torch.no_grad():
        ours = supernet(ids, mask, arch=ckpt.arch, return_logits=True).logits
        theirs = AutoModelForMaskedLM.from_pretrained(folder).eval()(ids, attention_mask=mask).logits
    assert float((ours - theirs).abs().max()) <= 1e-4


@pytest.mark.parametrize("depth_rule", ["first", "spread", "importance"])
@pytest.mark.parametrize("cut", ["heads", "dims"])
def test_ordered_supernet_sub_models_equal_their_extracted_models(scores, cut, depth_rule):
    ckpt, result = scores
    ordering = ordering_from_scores(result["scores"]["activation"], ckpt.arch, cut, "activation",
                                    result["layer_ranking"])
    space = space_from_arch(ckpt.arch, cut)
    ranking = result["layer_ranking"] if depth_rule == "importance" else None
    config = SuperBertConfig(space=space, vocab_size=len(VOCAB), max_position_embeddings=64, depth_rule=depth_rule,
                             layer_ranking=ranking)
    supernet = SuperBertForMaskedLM(config).eval()
    supernet.load_state_dict(supernet_state(ckpt, config, ordering), strict=False)
    ids, mask = batch()
    rng = np.random.default_rng(0)
    archs = {space.max_arch, space.min_arch} | {space.sample(rng) for _ in range(12)}
    with torch.no_grad():
        for arch in sorted(archs):
            ref = supernet(ids, mask, arch=arch, output_hidden_states=True, return_logits=True)
            out = extract(supernet, arch)(ids, attention_mask=mask, output_hidden_states=True)
            assert float((out.logits - ref.logits).abs().max()) <= 1e-5, str(arch)
            assert max(float((a - b).abs().max()) for a, b in zip(out.hidden_states, ref.hidden_states)) <= 1e-5


# ----- errors before any work ------------------------------------------------------------------------------------
def test_a_space_larger_than_the_checkpoint_is_refused_naming_the_dims(root, tmp_path):
    space = {"attention": "dims", "layers": [1, 4], "hidden": [16, 48, 16], "ffn": [32, 64, 32], "heads": 4,
             "qkv": [16, 48, 8]}
    out = tmp_path / "out"
    with pytest.raises(InitFromError, match=r"layers 4 > 3; hidden 48 > 32; .*head size 12 .* > the checkpoint's 8"):
        train_supernet(run_config(root, out, space=space))
    heads_space = {"attention": "heads", "layers": [1, 3], "hidden": [16, 32, 16], "ffn": [32, 64, 32],
                   "heads": [1, 2], "head_size": 16}
    with pytest.raises(InitFromError, match="head size 16 != the checkpoint's 8"):
        train_supernet(run_config(root, out, space=heads_space, objective="mlm"))
    with pytest.raises(InitFromError, match="max_seq_length=80 exceeds init_from's max_position_embeddings=64"):
        train_supernet(run_config(root, out, max_seq_length=80))
    with pytest.raises(ConfigError, match="derived from a checkpoint: set init_from"):
        TrainSupernetConfig.from_dict({"space": "from-init"})
    with pytest.raises(ConfigError, match="importance 'taylor' orders the units of a pre-trained checkpoint"):
        TrainSupernetConfig.from_dict({"importance": "taylor"})
    assert not out.exists()


def test_a_checkpoint_larger_than_the_space_is_sliced(root, tmp_path):
    """The supernet's max arch may be smaller than the checkpoint: its tensors are the first slices (of the chosen
    layers) of the ordered checkpoint."""
    space = {"attention": "dims", "layers": [1, 2], "hidden": [16, 24, 8], "ffn": [32, 48, 16], "heads": 4,
             "qkv": [16, 24, 8]}
    out = train_supernet(run_config(root, tmp_path / "small", space=space, importance="none", depth_rule="spread",
                                    max_steps=1))
    info = json.loads((out / "train_config.json").read_text())["init_from_info"]
    assert info["checkpoint_layers"] == [0, 2]  # spread: 2 of 3
    assert info["mlm_head"].startswith("initialised")
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert evals[0]["event"] == "eval" and np.isfinite(evals[0]["val_loss_max"])
    ckpt = load_checkpoint(str(root / "bert"))
    config = SuperBertConfig(space=SearchSpace.from_dict(space), vocab_size=len(VOCAB), depth_rule="spread")
    state = supernet_state(ckpt, config)
    assert torch.equal(state["bert.encoder.layer.1.intermediate.dense.weight"],
                       ckpt.state["bert.encoder.layer.2.intermediate.dense.weight"][:48, :24])


def test_a_folder_that_is_not_a_bert_is_refused(root, tmp_path):
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    out = tmp_path / "o"
    with pytest.raises(InitFromError, match="is a 'gpt2' model; init_from takes BERT-architecture checkpoints"):
        train_supernet(run_config(root, out, init_from=str(gpt)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InitFromError, match="has no config.json"):
        train_supernet(run_config(root, out, init_from=str(tmp_path / "empty")))
    st = make_checkpoint(tmp_path / "st", "sentence-transformers")
    (st / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "0_CNN",
                                                  "type": "sentence_transformers.models.CNN"}]))
    with pytest.raises(InitFromError, match="first module is 'sentence_transformers.models.CNN'"):
        train_supernet(run_config(root, out, init_from=str(st)))
    with pytest.raises(InitFromError, match="does not exist"):
        train_supernet(run_config(root, out, init_from=str(tmp_path / "missing")))
    assert not out.exists()
    # the config itself reads no file: the same keys build a config (the checks run before any work)
    assert TrainSupernetConfig.from_dict({"init_from": str(tmp_path / "missing")}).space == "from-init"


def test_a_vocabulary_mismatch_is_refused_before_anything_is_written(root, tmp_path):
    other = tmp_path / "other_tok"
    write_tokenizer(other, VOCAB + ["extra"])
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"vocab_size 41 but the tokenizer .* has 42 tokens"):
        train_supernet(run_config(root, out, tokenizer=str(other)))
    shuffled = tmp_path / "shuffled_tok"
    write_tokenizer(shuffled, SPECIAL + WORDS[::-1] + VOCAB[len(SPECIAL) + len(WORDS):])
    with pytest.raises(UserError, match="different vocabulary"):
        train_supernet(run_config(root, out, tokenizer=str(shuffled)))
    assert not out.exists()


# ----- training ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(root, tmp_path_factory) -> Path:
    return train_supernet(run_config(root, tmp_path_factory.mktemp("runs") / "kd"))


def test_init_from_defaults_to_kd_from_the_checkpoint_and_records_it(root, trained):
    run = json.loads((trained / "train_config.json").read_text())
    assert (run["space"], run["objective"], run["importance"], run["depth_rule"]) == \
        ("from-init", "kd", DEFAULT_IMPORTANCE, DEFAULT_DEPTH_RULE)
    assert Path(run["teacher"]) == root / "bert"
    assert run["space_resolved"]["attention"] == "dims" and "kd keeps" in run["space_cut_reason"]
    info = run["init_from_info"]
    assert info["kind"] == "BertModel" and info["arch"] == "3-32-64-4-32"
    assert info["mlm_head"] == "initialised (the checkpoint has no MLM head)"
    assert info["kd_projection"].startswith("identity")
    assert (trained / "init_from" / "ordering.safetensors").is_file()
    evals = [r for r in map(json.loads, (trained / "metrics.jsonl").read_text().splitlines()) if r["event"] == "eval"]
    assert evals[0]["val_loss_max"] <= 1e-6  # the full sub-model *is* the teacher before training
    assert evals[0]["val_loss_min"] > 1e-3
    supernet = SuperBertForMaskedLM.from_pretrained(trained)
    assert supernet.config.depth_rule == DEFAULT_DEPTH_RULE
    assert supernet.config.extra["init_from"]["importance"] == DEFAULT_IMPORTANCE
    if DEFAULT_DEPTH_RULE == "importance":
        assert supernet.config.layer_ranking == run["init_from_info"]["layer_ranking"]
    arch = Arch.parse("2-16-32-4-16")
    assert extract(supernet, arch).config.num_hidden_layers == 2


def test_depth_rule_importance_stores_the_ranking_in_the_supernet(root, tmp_path):
    out = train_supernet(run_config(root, tmp_path / "imp", depth_rule="importance", importance="taylor",
                                    max_steps=1))
    supernet = SuperBertForMaskedLM.from_pretrained(out)
    ordering = json.loads((out / "init_from" / "ordering.json").read_text())
    assert supernet.config.depth_rule == "importance"
    assert supernet.config.layer_ranking == ordering["layer_ranking"]  # same layers: the space keeps all 3


# ----- resume after a real SIGKILL -----------------------------------------------------------------------------
def _command(root: Path, out: Path, *extra: str) -> list[str]:
    keys = run_config(root, out, **dict(e.split("=", 1) for e in extra))
    args = []
    for key, value in keys.items():
        value = json.dumps(value) if isinstance(value, (list, bool)) or value is None else value
        args.append(f"{key}={value}")
    return [sys.executable, "-m", "autotinybert", "train-supernet", *args]


def _kill_when(process: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.01)
    raise AssertionError(f"the run ended before it could be killed: {process.communicate()}")


def _calibrated_batches(out: Path) -> int:
    file = out / "init_from" / "calibration.safetensors"
    if not file.is_file():
        return 0
    try:
        with safe_open(str(file), framework="pt") as handle:
            return int((handle.metadata() or {}).get("batches", 0))
    except Exception:  # noqa: BLE001  (a file being replaced this instant: try again)
        return 0


@pytest.mark.slow
def test_a_kill_during_calibration_resumes_where_it_stopped(root, tmp_path):
    extra = ("calibration_batches=300", "importance=taylor", "max_steps=2", "progress=true")
    reference_run = train_supernet(run_config(root, tmp_path / "ref", calibration_batches=300, importance="taylor",
                                              max_steps=2))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(_command(root, out, *extra), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _kill_when(process, lambda: 10 <= _calibrated_batches(out) <= 200)
    killed_at = _calibrated_batches(out)
    assert not (out / "init_from" / "ordering.safetensors").exists()
    with pytest.raises(subprocess.CalledProcessError):  # without resume=true the folder is refused
        subprocess.run(_command(root, out, *extra), env=env, capture_output=True, check=True, timeout=300)
    done = subprocess.run(_command(root, out, *extra, "resume=true"), env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed_at = int(done.stderr.split("calibration: resuming after ")[1].split()[0])
    assert resumed_at >= killed_at
    assert "calibration: batch 1/300" not in done.stderr
    ours, theirs = load_file(str(out / "init_from" / "ordering.safetensors")), \
        load_file(str(reference_run / "init_from" / "ordering.safetensors"))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(reference_run / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.slow
def test_a_kill_during_training_resumes_exactly(root, tmp_path):
    extra = ("max_steps=40", "checkpoint_every=1", "eval_every=100")
    reference_run = train_supernet(run_config(root, tmp_path / "ref", max_steps=40, checkpoint_every=1,
                                              eval_every=100))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(_command(root, out, *extra), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    steps = lambda: sorted((out / "checkpoints").glob("step-*")) if (out / "checkpoints").is_dir() else []  # noqa
    _kill_when(process, lambda: any(p.name >= "step-0000003" for p in steps()))
    assert not any(p.name == "step-0000040" for p in steps())
    done = subprocess.run(_command(root, out, *extra, "resume=true"), env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_file(str(out / "model.safetensors")), load_file(str(reference_run / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_a_sentence_transformers_folder_with_a_module_folder_is_its_own_teacher(tmp_path, root):
    folder = make_checkpoint(tmp_path / "st0", "sentence-transformers-0_Transformer")
    out = train_supernet(run_config(root, tmp_path / "run", init_from=str(folder), max_steps=1, importance="none",
                                    depth_rule="spread"))
    run = json.loads((out / "train_config.json").read_text())
    assert run["teacher"] == str(folder) and run["teacher_info"]["path"] == str(folder / "0_Transformer")
    assert run["init_from_info"]["kind"] == "sentence-transformers (BertModel)"
    assert run["init_from_info"]["kd_projection"].startswith("identity")


def test_the_space_command_prints_the_space_derived_from_a_checkpoint(root, capsys):
    from autotinybert.cli import main

    assert main(["space", "from-init", f"init_from={root / 'bert'}"]) == 0
    printed = capsys.readouterr().out
    assert "cut 'dims' chosen: kd keeps the checkpoint's 4 heads" in printed and "max arch 3-32-64-4-32" in printed
    assert main(["space", "from-init", f"init_from={root / 'bert'}", "objective=mlm"]) == 0
    assert "cut 'heads' chosen: head size 8 <= 64" in capsys.readouterr().out
    assert main(["space", "from-init"]) == 2
    assert "set init_from" in capsys.readouterr().err
