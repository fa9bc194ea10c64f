"""Fine-tune one model on one task: AdamW, linear warm-up and decay, evaluation every N steps, best and final scores.

    result = finetune("path/to/model", "sst2", "/data/glue_data", "runs/sst2", {"max_train_examples": 8000})
    result.best_score, result.final_score   # main metric (fraction): best dev score seen, and at the last step

The official AutoTinyBERT/TinyBERT code reports the best dev score seen during fine-tuning; both are kept here.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .config import FinetuneConfig
from .data import TaskData, load_task
from .features import Encoded, bucketed_batches, collate, encode_pairs, eval_batches, load_tokenizer
from .metrics import glue_metrics, squad_metrics
from .squad import SquadFeatures, build_features, decode_spans
from .tasks import TaskSpec, get_task


@dataclass
class EvalRecord:
    step: int
    epoch: float
    train_loss: float       # mean training loss since the previous evaluation
    metrics: dict[str, float]
    score: float            # the task's main metric


@dataclass
class FinetuneResult:
    """What one fine-tuning run produced. Scores are fractions in [0, 1]."""

    task: str
    main_metric: str
    best_score: float                   # best main-metric value over all evaluations (what the paper reports)
    final_score: float                  # main metric after the last step
    best_metrics: dict[str, float]
    final_metrics: dict[str, float]
    best_step: int
    steps: int
    epochs: float
    train_examples: int
    eval_examples: dict[str, int]
    wall_s: float
    examples_per_s: float               # training throughput (examples / training second)
    history: list[EvalRecord]
    config: dict[str, Any]
    model: dict[str, Any]               # source, class, arch, parameters, latency if known
    data: dict[str, str]                # where the data came from; notes such as the SQuAD article split
    out_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- model loading

def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available; use device 'cpu' or 'auto'")
    return torch.device(name)


def _head_config(spec: TaskSpec) -> dict[str, Any]:
    if spec.kind == "span":
        return {}
    if spec.kind == "regression":
        return {"num_labels": 1, "problem_type": "regression"}
    labels = dict(enumerate(spec.labels))
    return {"num_labels": len(labels), "id2label": labels, "label2id": {v: k for k, v in labels.items()},
            "problem_type": "single_label_classification"}


def init_new_weights(model: nn.Module, names: set[str], seed: int) -> None:
    """Re-initialise freshly created parameters (task head, pooler) from an explicit generator, BERT-style.

    Linear weights ~ N(0, initializer_range), biases 0; LayerNorm weight 1, bias 0. Makes runs reproducible
    without touching torch's global RNG.
    """
    std = float(getattr(model.config, "initializer_range", 0.02))
    gen = torch.Generator().manual_seed(int(seed) * 1000003 + 17)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(names):
            p = params.get(name)
            if p is None:
                continue
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() == 1:   # LayerNorm weight
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(std).to(p.dtype))


def load_model(source, spec: TaskSpec, seed: int, new_weights: set[str] | None = None):
    """(model, info) for `spec`: a folder loaded with `AutoModelFor{SequenceClassification,QuestionAnswering}`,
    or an already-built model (checked to have the right head). New parameters are seeded from `seed`."""
    import autotinybert  # noqa: F401  (registers model_type "autotinybert" with the Auto classes)
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, PreTrainedModel

    if isinstance(source, PreTrainedModel):
        model = source
        head = "qa_outputs" if spec.kind == "span" else "classifier"
        if not hasattr(model, head) and not any(n.startswith(head) for n, _ in model.named_parameters()):
            raise UserError(f"model {type(model).__name__} has no {head} head for {spec.name}; build it with "
                            f"{'AutoModelForQuestionAnswering' if spec.kind == 'span' else 'AutoModelForSequenceClassification'}")
        if spec.kind != "span" and model.config.num_labels != spec.num_labels:
            raise UserError(f"model has {model.config.num_labels} labels, {spec.name} needs {spec.num_labels}")
        if new_weights:
            init_new_weights(model, new_weights, seed)
        return model, {"source": type(model).__name__}
    path = Path(source)
    if not (path / "config.json").is_file():
        raise UserError(f"model folder {path} has no config.json; pass a save_pretrained folder")
    auto = AutoModelForQuestionAnswering if spec.kind == "span" else AutoModelForSequenceClassification
    try:
        model, info = auto.from_pretrained(str(path), output_loading_info=True, **_head_config(spec))
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"cannot load {path} with {auto.__name__}: {err}") from None
    missing = set(info.get("missing_keys", ()))
    init_new_weights(model, missing, seed)
    return model, {"source": str(path), "new_parameters": sorted(missing)}


def describe_model(model, source_info: dict[str, Any], source) -> dict[str, Any]:
    """Class, arch (``L-dm-df-h-dqkv``), parameter count and latency if the folder records one."""
    cfg = model.config
    out = dict(source_info)
    out["class"] = type(model).__name__
    out["model_type"] = getattr(cfg, "model_type", None)
    try:
        out["arch"] = f"{cfg.num_hidden_layers}-{cfg.hidden_size}-{cfg.intermediate_size}-" \
                      f"{cfg.num_attention_heads}-{getattr(cfg, 'qkv_size', None) or cfg.hidden_size}"
    except AttributeError:
        out["arch"] = None
    out["parameters"] = int(sum(p.numel() for p in model.parameters()))
    if isinstance(source, (str, Path)) and (Path(source) / "latency.json").is_file():
        try:
            out["latency"] = json.loads((Path(source) / "latency.json").read_text())
        except json.JSONDecodeError:
            out["latency"] = None
    return out


# ---------------------------------------------------------------- data preparation

@dataclass
class Prepared:
    """Tokenized training data and dev splits, ready for batching."""

    train: Encoded | SquadFeatures
    dev: dict[str, Encoded | SquadFeatures]
    dev_examples: dict[str, tuple]
    n_train: int


def _subsample(items: tuple, limit: int | None, rng: np.random.Generator) -> tuple:
    if limit is None or len(items) <= limit:
        return items
    keep = np.sort(rng.choice(len(items), size=limit, replace=False))
    return tuple(items[i] for i in keep)


def prepare(spec: TaskSpec, data: TaskData, tokenizer, cfg: FinetuneConfig) -> Prepared:
    # Train subset depends on split_seed (not seed) so that different seeds / candidates see the same examples.
    train = _subsample(data.train, cfg.max_train_examples, np.random.default_rng([cfg.split_seed, 1]))
    if not train:
        raise UserError(f"{spec.name}: no training examples (train file missing or empty)")
    dev_examples = {split: _subsample(ex, cfg.max_eval_examples, np.random.default_rng([cfg.split_seed, 2, i]))
                    for i, (split, ex) in enumerate(data.dev.items())}
    if spec.kind == "span":
        kw = dict(max_seq_length=cfg.max_seq_length, doc_stride=cfg.doc_stride, max_query_length=cfg.max_query_length)
        return Prepared(build_features(tokenizer, train, training=True, **kw),
                        {s: build_features(tokenizer, ex, **kw) for s, ex in dev_examples.items()},
                        dev_examples, len(train))
    reg = spec.kind == "regression"
    return Prepared(encode_pairs(tokenizer, train, cfg.max_seq_length, reg),
                    {s: encode_pairs(tokenizer, ex, cfg.max_seq_length, reg) for s, ex in dev_examples.items()},
                    dev_examples, len(train))


def _batch(data: Encoded | SquadFeatures, index: np.ndarray, pad_id: int, with_labels: bool,
           device: torch.device) -> dict[str, torch.Tensor]:
    if isinstance(data, SquadFeatures):
        feats = [data.features[i] for i in index]
        batch = collate([f.input_ids for f in feats], [f.token_type_ids for f in feats], pad_id)
        if with_labels:
            batch["start_positions"] = torch.tensor([f.start_position for f in feats])
            batch["end_positions"] = torch.tensor([f.end_position for f in feats])
    else:
        batch = collate([data.input_ids[i] for i in index], [data.token_type_ids[i] for i in index], pad_id)
        if with_labels:
            batch["labels"] = torch.from_numpy(data.labels[index])
    return {k: v.to(device) for k, v in batch.items()}


@torch.inference_mode()
def evaluate_prepared(model, spec: TaskSpec, prepared: Prepared, cfg: FinetuneConfig, pad_id: int,
                      device: torch.device) -> dict[str, float]:
    """Every metric of `spec` on the prepared dev split(s); MNLI adds ``matched_`` / ``mismatched_`` keys."""
    was_training = model.training
    model.eval()
    per_split: dict[str, dict[str, float]] = {}
    for split, data in prepared.dev.items():
        examples = prepared.dev_examples[split]
        if spec.kind == "span":
            starts: list = [None] * len(data)
            ends: list = [None] * len(data)
            for index in eval_batches(data.lengths, cfg.eval_batch_size):
                out = model(**_batch(data, index, pad_id, False, device))
                for row, i in enumerate(index):
                    n = len(data.features[i].input_ids)
                    starts[i] = out.start_logits[row, :n].float().cpu().numpy()
                    ends[i] = out.end_logits[row, :n].float().cpu().numpy()
            preds = decode_spans(examples, data, starts, ends, cfg.n_best, cfg.max_answer_length)
            per_split[split] = squad_metrics(preds, {e.qid: e.answers for e in examples})
        else:
            logits = np.zeros((len(data), spec.num_labels), dtype=np.float32)
            for index in eval_batches(data.lengths, cfg.eval_batch_size):
                logits[index] = model(**_batch(data, index, pad_id, False, device)).logits.float().cpu().numpy()
            preds = logits[:, 0] if spec.kind == "regression" else logits.argmax(-1)
            per_split[split] = glue_metrics(spec, preds, data.labels)
    model.train(was_training)
    if len(per_split) == 1:
        return next(iter(per_split.values()))
    # MNLI: matched is the headline number (paper's "MNLI" column); mismatched is reported beside it.
    flat = dict(per_split["dev_matched"])
    for split, metrics in per_split.items():
        for k, v in metrics.items():
            flat[f"{split.removeprefix('dev_')}_{k}"] = v
    return flat


# ---------------------------------------------------------------- optimisation

def make_optimizer(model: nn.Module, cfg: FinetuneConfig, total_steps: int):
    """AdamW without decay on biases / LayerNorm, and a linear warm-up then linear decay to 0."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() == 1 or name.endswith("bias") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.learning_rate, eps=cfg.adam_epsilon)
    warmup = int(round(cfg.warmup_proportion * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_and_evaluate(model, spec: TaskSpec, prepared: Prepared, cfg: FinetuneConfig, pad_id: int,
                       device: torch.device) -> tuple[list[EvalRecord], dict[str, torch.Tensor] | None, int, float, float]:
    """The loop. Returns (history, best state dict if cfg.save_model == 'best', steps, epochs run, examples/s)."""
    n = len(prepared.train)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = max(1, math.ceil(per_epoch * cfg.epochs))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    opt, sched = make_optimizer(model, cfg, total)
    rng = np.random.default_rng([cfg.seed, 3])
    lengths = prepared.train.lengths
    history: list[EvalRecord] = []
    best_state, best = None, -math.inf
    losses: list[float] = []
    train_s = 0.0
    seen = 0
    model.to(device).train()

    def run_eval(step: int) -> None:
        nonlocal best_state, best
        metrics = evaluate_prepared(model, spec, prepared, cfg, pad_id, device)
        score = float(metrics[spec.main_metric])
        history.append(EvalRecord(step, round(step / per_epoch, 4), float(np.mean(losses)) if losses else math.nan,
                                  metrics, score))
        losses.clear()
        if score > best:
            best = score
            if cfg.save_model == "best":
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"finetune {spec.name}", disable=not cfg.progress, unit="step")
    step = 0
    while step < total:
        for index in bucketed_batches(lengths, cfg.batch_size, rng):
            t0 = time.perf_counter()
            loss = model(**_batch(prepared.train, index, pad_id, True, device)).loss
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            train_s += time.perf_counter() - t0
            losses.append(float(loss.detach()))
            seen += len(index)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            end_of_epoch = step % per_epoch == 0
            if step == total or (cfg.eval_every and step % cfg.eval_every == 0) or \
                    (cfg.eval_every is None and end_of_epoch):
                run_eval(step)
                bar.set_postfix(loss=f"{history[-1].train_loss:.4f}", dev=f"{history[-1].score:.4f}")
            if step == total:
                break
    bar.close()
    return history, best_state, step, step / per_epoch, seen / max(train_s, 1e-9)


# ---------------------------------------------------------------- public entry point

def _check_out_dir(out_dir: str | Path | None, overwrite: bool) -> None:
    if out_dir is None:
        return
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output folder {out} is not empty; choose a new folder or pass overwrite (--overwrite)")


def finetune(model_dir_or_model, task: str | TaskSpec, data_dir: str | Path, out_dir: str | Path | None = None,
             config: FinetuneConfig | dict | str | Path | None = None, *, tokenizer=None, overwrite: bool = False,
             new_weights: set[str] | None = None, data: TaskData | None = None) -> FinetuneResult:
    """Fine-tune a model on `task` and score it on the dev set(s); write OUT/{result.json,config.json,model/}.

    `model_dir_or_model`: a `save_pretrained` folder (AutoTinyBert or any BERT-like HF model; the task head is
    created) or a model object that already has the task head (then pass `tokenizer`, and `new_weights`: names of
    parameters to seed-initialise). `config`: a `FinetuneConfig`, dict or YAML/JSON path; unset task settings take
    Table D.1's values. `out_dir=None` writes nothing. Every input is checked before training starts.
    """
    started = time.time()
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    cfg = FinetuneConfig.load(config).resolve(spec)
    _check_out_dir(out_dir, overwrite)
    device = _device(cfg.device)
    if data is None:
        data = load_task(spec, data_dir, need_train=True, squad_article_split=cfg.squad_article_split,
                         split_seed=cfg.split_seed)
    if isinstance(model_dir_or_model, (str, Path)) and not (Path(model_dir_or_model) / "config.json").is_file():
        raise UserError(f"model folder {model_dir_or_model} has no config.json; pass a save_pretrained folder")
    if tokenizer is None:
        if not isinstance(model_dir_or_model, (str, Path)):
            raise UserError("pass tokenizer= (a folder or a loaded tokenizer) when giving a model object")
        tokenizer = model_dir_or_model
    tokenizer = load_tokenizer(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # Model construction (throw-away default init of new heads) and dropout draw from torch's default generator:
    # fork it, so the caller's stream is left untouched, and seed the fork from cfg.seed, so a run is reproducible.
    # The new heads themselves are then re-drawn from an explicit generator (init_new_weights).
    devices = [device] if device.type == "cuda" else []
    with _threads(cfg.threads), torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        model, info = load_model(model_dir_or_model, spec, cfg.seed, new_weights)
        prepared = prepare(spec, data, tokenizer, cfg)
        history, best_state, steps, epochs, speed = train_and_evaluate(model, spec, prepared, cfg, pad_id, device)
    best_rec = max(history, key=lambda r: r.score)
    final = history[-1]
    result = FinetuneResult(
        task=spec.name, main_metric=spec.main_metric, best_score=best_rec.score, final_score=final.score,
        best_metrics=best_rec.metrics, final_metrics=final.metrics, best_step=best_rec.step, steps=steps,
        epochs=round(epochs, 4), train_examples=prepared.n_train,
        eval_examples={s: len(e) for s, e in prepared.dev_examples.items()},
        wall_s=0.0, examples_per_s=round(speed, 2),
        history=history, config=cfg.to_dict(), model=describe_model(model, info, model_dir_or_model),
        data={"source": data.source, "note": data.note}, out_dir=str(out_dir) if out_dir is not None else None,
    )
    result.wall_s = round(time.time() - started, 2)
    if out_dir is not None:
        write_outputs(model, tokenizer, result, best_state, Path(out_dir), cfg, overwrite)
    return result


def write_outputs(model, tokenizer, result: FinetuneResult, best_state, out: Path, cfg: FinetuneConfig,
                  overwrite: bool) -> None:
    """OUT/result.json, OUT/config.json (resolved settings), OUT/history.jsonl, OUT/model/ — all staged, then moved."""
    from ..io import atomic_write_json, atomic_write_text, staged_dir

    with staged_dir(out, overwrite=overwrite) as stage:
        atomic_write_json(stage / "config.json", {"task": result.task, **cfg.to_dict()})
        atomic_write_text(stage / "history.jsonl", "".join(json.dumps(asdict(r)) + "\n" for r in result.history))
        if cfg.save_model != "none":
            model_dir = stage / "model"
            if cfg.save_model == "best" and best_state is not None:
                model.load_state_dict(best_state)
            model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
        atomic_write_json(stage / "result.json", result.to_dict())
