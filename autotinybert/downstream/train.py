"""Fine-tune one model on one task: AdamW, linear warm-up and decay, evaluation every N steps, best and final scores.

    result = finetune("path/to/model", "sst2", "/data/glue_data", "runs/sst2", {"max_train_examples": 8000})
    result.best_score, result.final_score   # main metric (fraction): best dev score seen, and at the last step

The official AutoTinyBERT/TinyBERT code reports the best dev score seen during fine-tuning; both are kept here.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..runtime import resolve_device, torch_threads
from ..seeding import batch_order_rng, forked_global_rng
from ..train.optim import adamw, linear_warmup_decay, warmup_steps
from .config import FinetuneConfig
from .data import TaskData, load_task
from .evaluate import evaluate_prepared
from .features import bucketed_batches, load_tokenizer
from .model import describe_model, load_model
from .prepare import Prepared, batch_tensors, prepare
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


@dataclass
class TrainOutcome:
    """What the fine-tuning loop produced."""

    history: list[EvalRecord]
    best_state: dict[str, torch.Tensor] | None  # weights at the best evaluation (only if cfg.save_model == "best")
    steps: int
    epochs: float  # steps / steps per epoch
    examples_per_s: float  # training throughput (examples / training second)


class _Evaluations:
    """The evaluation history, the training losses since the last evaluation, and the best weights if kept."""

    def __init__(self, keep_best: bool):
        self.history: list[EvalRecord] = []
        self.losses: list[float] = []
        self.best = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.keep_best = keep_best

    def record(self, model, step: int, epoch: float, metrics: dict[str, float], score: float) -> EvalRecord:
        mean_loss = float(np.mean(self.losses)) if self.losses else math.nan
        self.history.append(EvalRecord(step, round(epoch, 4), mean_loss, metrics, score))
        self.losses.clear()
        if score > self.best:
            self.best = score
            if self.keep_best:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return self.history[-1]


def train_and_evaluate(model, spec: TaskSpec, prepared: Prepared, cfg: FinetuneConfig, pad_id: int,
                       device: torch.device) -> TrainOutcome:
    """The loop: AdamW, linear warm-up (rounded to the nearest step) then decay, evaluation every `eval_every`
    steps (or at every epoch end) and at the last step."""
    n = len(prepared.train)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = max(1, math.ceil(per_epoch * cfg.epochs))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    opt = adamw(model, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, eps=cfg.adam_epsilon)
    sched = linear_warmup_decay(opt, total, warmup_steps(cfg.warmup_ratio, total, rounding="nearest"))
    order = batch_order_rng(cfg.seed)
    evals = _Evaluations(keep_best=cfg.save_model == "best")
    train_s, seen, step = 0.0, 0, 0
    model.to(device).train()
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"finetune {spec.name}", disable=not cfg.progress, unit="step")
    while step < total:
        for index in bucketed_batches(prepared.train.lengths, cfg.batch_size, order):
            t0 = time.perf_counter()
            loss = model(**batch_tensors(prepared.train, index, pad_id, True, device)).loss
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            train_s += time.perf_counter() - t0
            evals.losses.append(float(loss.detach()))
            seen += len(index)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{evals.losses[-1]:.4f}")
            end_of_epoch = step % per_epoch == 0
            if step == total or (cfg.eval_every and step % cfg.eval_every == 0) or \
                    (cfg.eval_every is None and end_of_epoch):
                metrics = evaluate_prepared(model, spec, prepared, cfg, pad_id, device)
                record = evals.record(model, step, step / per_epoch, metrics, float(metrics[spec.main_metric]))
                bar.set_postfix(loss=f"{record.train_loss:.4f}", dev=f"{record.score:.4f}")
            if step == total:
                break
    bar.close()
    return TrainOutcome(evals.history, evals.best_state, step, step / per_epoch, seen / max(train_s, 1e-9))


def _check_out_dir(out_dir: str | Path | None, overwrite: bool, inputs: list[tuple[str, Any]] = ()) -> None:
    """Before any work: `out` is writable, is none of the inputs (the model folder, the data) and is empty unless
    `overwrite`."""
    from ..io import check_output

    if out_dir is None:
        return
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a folder")
    check_output(out, inputs)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output folder {out} is not empty; choose a new folder or pass overwrite=true")


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
    _check_out_dir(out_dir, overwrite, [("data", data_dir), ("model", model_dir_or_model
                                                          if isinstance(model_dir_or_model, (str, Path)) else None)])
    device = resolve_device(cfg.device)
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

    # Model construction (throw-away default init of new heads) and dropout draw from torch's global generator:
    # run them on a fork of it seeded from cfg.seed, so a run is reproducible and the caller's stream untouched.
    # The new heads themselves are then re-drawn from an explicit generator (model.init_new_weights).
    with torch_threads(cfg.threads), forked_global_rng(cfg.seed, device):
        loaded = load_model(model_dir_or_model, spec, cfg.seed, new_weights)
        prepared = prepare(spec, data, tokenizer, cfg)
        outcome = train_and_evaluate(loaded.model, spec, prepared, cfg, pad_id, device)
    best_rec = max(outcome.history, key=lambda r: r.score)
    final = outcome.history[-1]
    result = FinetuneResult(
        task=spec.name, main_metric=spec.main_metric, best_score=best_rec.score, final_score=final.score,
        best_metrics=best_rec.metrics, final_metrics=final.metrics, best_step=best_rec.step, steps=outcome.steps,
        epochs=round(outcome.epochs, 4), train_examples=prepared.n_train,
        eval_examples={s: len(e) for s, e in prepared.dev_examples.items()},
        wall_s=0.0, examples_per_s=round(outcome.examples_per_s, 2),
        history=outcome.history, config=cfg.to_dict(), model=describe_model(loaded, model_dir_or_model),
        data={"source": data.source, "note": data.note}, out_dir=str(out_dir) if out_dir is not None else None,
    )
    result.wall_s = round(time.time() - started, 2)
    if out_dir is not None:
        write_outputs(loaded.model, tokenizer, result, outcome.best_state, Path(out_dir), cfg, overwrite)
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
            write_finetuned_card(model, result, cfg, model_dir, best=cfg.save_model == "best" and best_state is not None)
        atomic_write_json(stage / "result.json", result.to_dict())


def write_finetuned_card(model, result: FinetuneResult, cfg: FinetuneConfig, model_dir: Path, best: bool) -> Path:
    """README.md of a fine-tuned model: the dev metrics of the weights saved (best or final, as in result.json),
    the fine-tuning budget, and what the source folder's card knows (how it was found, latency, earlier budgets)."""
    from ..modelcard import CardInfo, Metric, latency_facts, write_card
    from .tasks import get_task

    spec = get_task(result.task)
    metrics = result.best_metrics if best else result.final_metrics
    task_type = "question-answering" if spec.kind == "span" else "text-classification"
    dataset = "SQuAD v1.1" if spec.kind == "span" else f"GLUE {spec.folder}"
    card_metrics = [Metric(name=name, value=float(value), task=spec.name, dataset=dataset, split="validation",
                           task_type=task_type)
                    for name, value in metrics.items() if isinstance(value, (int, float))]
    training = {"task": spec.name, "weights": "best dev evaluation" if best else "last step",
                "steps": result.steps, "epochs": result.epochs, "train examples": result.train_examples,
                "best step": result.best_step, "learning rate": cfg.learning_rate, "batch size": cfg.batch_size,
                "max sequence length": cfg.max_seq_length, "seed": cfg.seed, "data": result.data.get("source"),
                "note": result.data.get("note") or None}
    source = result.model.get("source")
    latency = result.model.get("latency")
    if isinstance(latency, dict) and {"median_ms", "reference_ms"} <= set(latency):
        latency = latency_facts(latency["median_ms"], latency["reference_ms"], latency.get("device") or {},
                                latency.get("how", "measured"))
    else:
        latency = None
    info = CardInfo.of_model(model, "fine-tuned", source=source if isinstance(source, str) else None,
                             training={k: v for k, v in training.items() if v is not None}, metrics=card_metrics,
                             latency=latency, tags=[spec.name])
    if isinstance(source, str) and Path(source).is_dir():
        info.inherit(source)
    return write_card(model_dir, info, name=f"{Path(source).name if isinstance(source, str) else 'model'}-{spec.name}")
