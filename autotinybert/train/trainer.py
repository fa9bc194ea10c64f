"""Algorithm 1 (batch-wise one-shot training) and further training of one model, on one or more processes, as one
recipe:

    trainer = Trainer(config, ctx)   # checks that need no data and no model (seconds)
    trainer.setup()                  # teacher, tokenizer checks, corpus, model, optimiser, resume state, run files
    trainer.train()                  # the loop; `save` writes a checkpoint and the loadable result as it goes

Each optimizer step (train/step.py): the global batch of `batch_size` sequences is split into N sub-batches, one
per Algorithm-1 worker (N = `workers`, default the number of processes; a process may play several workers in
turn); every worker w draws M = `archs_per_step` archs from a generator seeded by (seed, step, w, m) and
accumulates the gradient of each arch on its sub-batch (fresh masks per (step, w, m), the teacher run once per
sub-batch); one bucketed all-reduce sums the gradients over processes; one clipped AdamW update.

Because every draw (arch, mask, dropout) depends only on (seed, step, worker, m, micro-batch), a run is
reproducible, resumes exactly, and gives the same parameters whether N workers run as N processes or as one.
What differs between supernet training and further training is behind `tasks.TrainingTask`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import UserError
from ..io import apply_umask, atomic_write_json, check_safetensors, clear_folder, copy_tokenizer_files
from ..pretrained import bert_folder
from ..runtime import torch_threads
from ..seeding import derive_seed, forked_global_rng
from .checkpoint import ResumePoint, check_compatible, load_checkpoint, resume_point, save_checkpoint
from .config import TrainConfig, TrainConfigError, TrainModelConfig, TrainSupernetConfig
from .distributed import DistContext, init_distributed, shutdown
from .metrics import METRICS_NAME, MetricsLog
from .objectives import StudentModule, Teacher, describe_teacher
from .optim import adamw, linear_warmup_decay, warmup_steps
from .step import OneShotStep, StepResult
from .init_from import clear_run_folder
from .tasks import TrainingTask, draw_archs, make_task
from .validation import PROJECTION_NAME, RUN_CONFIG_NAME, VALIDATION_NAME, EvalSet
from .validation import evaluate_terms as held_out_terms

if TYPE_CHECKING:
    from ..data.dataset import PreparedCorpus

__all__ = ["Trainer", "draw_archs", "train_model", "train_supernet"]

EVAL_BATCH_SIZE = 32  # held-out loss batches; LossProxy's default, so the proxy reproduces the logged eval losses


class Trainer:
    """One process of a training run."""

    # built by setup(), in this order
    teacher: Teacher | None
    corpus: PreparedCorpus
    module: StudentModule  # the model (+ the KD projection); what the optimizer and checkpoints hold
    total_steps: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    start_step: int  # 0, or the step of the checkpoint resumed from
    train_step: OneShotStep
    eval_set: EvalSet | None  # rank 0 only

    def __init__(self, config: TrainConfig, ctx: DistContext):
        from ..data.corpus import list_corpus_files

        c = config
        if not c.out:
            raise TrainConfigError("out=DIR is required: the folder the run writes")
        list_corpus_files(c.corpus)  # missing / empty corpus -> clear error now
        self.config, self.ctx, self.out = config, ctx, Path(c.out)
        self.resume: ResumePoint = resume_point(self.out, resume=c.resume, overwrite=c.overwrite,
                                                run_marker=RUN_CONFIG_NAME, inputs=_input_paths(c))
        self.workers: int = c.workers or ctx.world_size
        if self.resume.checkpoint is not None:
            check_compatible(self.resume.checkpoint, c.fingerprint(), c.compute_settings(), self.workers)
        if self.workers % ctx.world_size:
            raise TrainConfigError(f"workers={self.workers} must be a multiple of the number of processes "
                                   f"({ctx.world_size})")
        if c.batch_size % (self.workers * c.grad_accum):
            raise TrainConfigError(f"batch_size={c.batch_size} must be divisible by workers x grad_accum = "
                                   f"{self.workers} x {c.grad_accum}")
        if isinstance(c, TrainModelConfig) and (Path(c.model) / "model.safetensors").is_file():
            check_safetensors(Path(c.model) / "model.safetensors")  # a truncated copy fails now, not after tokenizing
        self.task: TrainingTask = make_task(c)
        if c.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError:
                raise UserError("tensorboard=true needs the tensorboard package: pip install tensorboard") from None

    # ----- setup -----------------------------------------------------------------------------------------------
    def setup(self) -> None:
        c, ctx = self.config, self.ctx
        # a sentence-transformers folder (init_from's default teacher) keeps its BERT in a module folder
        self.teacher = Teacher(bert_folder(c.teacher), ctx.device) if c.objective == "kd" else None
        source = c.tokenizer or self.task.default_tokenizer()
        if source is not None:  # vocabulary / teacher checks now, before tokenizing the corpus
            from ..data.tokenizer import load_tokenizer

            self._check_tokenizer(load_tokenizer(source), source)
        self.corpus = self._prepare_corpus(source)
        if source is None:  # the tokenizer was trained on the corpus just now
            self._check_tokenizer(self.corpus.tokenizer, None)
        n_train = len(self.corpus.train)
        self.total_steps = c.max_steps or max(1, math.ceil(c.epochs * n_train / c.batch_size))
        if ctx.is_main:  # before the model: init_from's calibration keeps its progress in the run folder
            self._write_run_files()
        ctx.barrier()
        self.module = self._build_module()
        self.optimizer = adamw(self.module, learning_rate=c.learning_rate, weight_decay=c.weight_decay,
                               eps=c.adam_epsilon, betas=(c.adam_beta1, c.adam_beta2))
        self.scheduler = linear_warmup_decay(self.optimizer, self.total_steps,
                                             warmup_steps(c.warmup_ratio, self.total_steps, rounding="floor"))
        self.start_step = self._restore()
        self.train_step = OneShotStep(c, ctx, self.workers, self.corpus, self.task, self.teacher, self.module,
                                      self.optimizer)
        self.eval_set = None
        if ctx.is_main:
            self.eval_set = EvalSet(self.corpus.validation[:c.eval_sequences], self.corpus.pad_token_id,
                                    c.objective, EVAL_BATCH_SIZE, c.seed, self.train_step.masking, self.teacher,
                                    ctx.device)

    def _check_tokenizer(self, tokenizer, source: str | None) -> None:
        self.task.check_tokenizer(tokenizer, source)
        if self.teacher is not None:
            self.teacher.check_student(self.task.student_heads, self.task.attention_cut, tokenizer)

    def _prepare_corpus(self, tokenizer: str | None):
        from ..data.dataset import prepare_corpus

        c, ctx = self.config, self.ctx
        kwargs = dict(max_seq_length=c.max_seq_length, cache_dir=c.cache_dir, val_fraction=c.val_fraction,
                      val_max_sequences=c.val_max_sequences, tokenizer_vocab_size=c.tokenizer_vocab_size)
        if ctx.is_main:  # rank 0 builds the cache; the others then find it
            corpus = prepare_corpus(c.corpus, tokenizer, progress=c.progress, **kwargs)
        ctx.barrier()
        if not ctx.is_main:
            corpus = prepare_corpus(c.corpus, tokenizer, progress=False, **kwargs)
        if len(corpus.train) < c.batch_size:
            raise UserError(f"the corpus packs into {len(corpus.train)} training sequences, fewer than "
                            f"batch_size={c.batch_size}; add text or lower batch_size")
        return corpus

    def _build_module(self) -> StudentModule:
        c = self.config
        with forked_global_rng(derive_seed(c.seed, purpose="init")):  # BERT init from a seeded stream
            model = self.task.build_model(self.corpus.tokenizer)
            module = self._student(model)
        if isinstance(c, TrainModelConfig) and c.kd_projection and module.projection is not None:
            module.load_projection(c.kd_projection)  # the supernet's trained projection, not a fresh one
        module = module.to(self.ctx.device)
        # init_from: the checkpoint's (ordered) weights replace the fresh ones; a resumed run then loads its checkpoint
        info = self.task.initialize(module, self.corpus, self.teacher, self.ctx, self._student)
        if info is not None and self.ctx.is_main:
            run_file = self.out / RUN_CONFIG_NAME
            atomic_write_json(run_file, {**json.loads(run_file.read_text()), "init_from_info": info})
        return module

    def _student(self, model: nn.Module) -> StudentModule:
        """`model` with the objective's trainable extras (the KD projection)."""
        c = self.config
        return StudentModule(model, c.objective, self.teacher.hidden if self.teacher else None,
                             c.kd_attention_weight, c.kd_hidden_weight, c.kd_attention)

    def _restore(self) -> int:
        """Load the checkpoint resumed from (weights, AdamW moments, schedule, RNG); its step, or 0."""
        checkpoint = self.resume.checkpoint
        if checkpoint is None:
            return 0
        load_checkpoint(checkpoint, self.module, self.optimizer)
        self.scheduler.load_state_dict(checkpoint.state["scheduler"])
        # No RNG state to restore: every draw forks torch's global RNG with its own seed (seeding.py), so that state
        # is never read. Checkpoints no longer record it (it made two identical runs' checkpoints differ); an older
        # checkpoint's record is applied as it was.
        if "rng" in checkpoint.state:
            torch.set_rng_state(torch.tensor(checkpoint.state["rng"]["torch_cpu"], dtype=torch.uint8))
        return checkpoint.step

    def _write_run_files(self) -> None:
        c, out, corpus = self.config, self.out, self.corpus
        if out.exists() and self.resume.clear_out:
            if c.resume and self.task.keeps_on_restart(out):  # init_from: the calibration's progress survives
                clear_run_folder(out)
            else:
                clear_folder(out)  # the folder (or the symlink to it) stays: its contents go
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / RUN_CONFIG_NAME, {
            **c.to_dict(), **self.task.run_info(),
            "world_size": self.ctx.world_size, "resolved_workers": self.workers, "total_steps": self.total_steps,
            "corpus_cache": str(corpus.cache_dir), "corpus_fingerprint": corpus.fingerprint,
            "corpus_stats": corpus.stats, "tokenizer_dir": str(corpus.tokenizer_dir),
            "teacher_info": describe_teacher(self.teacher), "config_fingerprint": c.fingerprint()})
        val = torch.as_tensor(np.asarray(corpus.validation, dtype=np.int32))
        save_file({"input_ids": val}, str(out / VALIDATION_NAME))
        copy_tokenizer_files(corpus.tokenizer_dir, out)

    # ----- train -----------------------------------------------------------------------------------------------
    def train(self) -> Path:
        """Run from `start_step` to the last step (or a stop); returns the run folder."""
        c, ctx = self.config, self.ctx
        metrics = MetricsLog(self.out / METRICS_NAME, self.start_step, enabled=ctx.is_main,
                             tensorboard=c.tensorboard and ctx.is_main)
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total_steps, initial=self.start_step, desc="train",
                   disable=not (ctx.is_main and c.progress), dynamic_ncols=True)
        try:
            if ctx.is_main and self.start_step == 0:
                metrics.eval(0, self.evaluate())
            self.module.train()
            started = time.perf_counter()
            step = self.start_step
            while step < self.total_steps:
                t0 = time.perf_counter()
                result = self.train_step(step)
                self.scheduler.step()
                step += 1
                self._log(metrics, bar, step, result, time.perf_counter() - t0)
                stop = self._should_stop(step, started)
                done = step == self.total_steps or stop
                if ctx.is_main and (step % c.eval_every == 0 or done):
                    metrics.eval(step, self.evaluate())
                if step % c.checkpoint_every == 0 or done:
                    self.save(step)
                if stop:
                    break
        finally:
            bar.close()
            metrics.close()
        return self.out

    def _log(self, metrics: MetricsLog, bar, step: int, result: StepResult, seconds: float) -> None:
        if not self.ctx.is_main:
            return
        if step % self.config.log_every == 0 or step == self.total_steps:
            metrics.step(step, loss=result.loss, lr=self.scheduler.get_last_lr()[0], tokens=result.tokens,
                         seconds=seconds, archs=result.archs, terms=result.terms)
        bar.set_postfix(loss=f"{result.loss:.3f}", tok_s=f"{result.tokens / seconds:,.0f}", refresh=False)
        bar.update(1)

    def _should_stop(self, step: int, started: float) -> bool:
        c = self.config
        stop = (c.stop_after is not None and step >= c.stop_after) or (
            c.time_budget_s is not None and time.perf_counter() - started >= c.time_budget_s)
        if self.ctx.distributed and c.time_budget_s is not None:  # all ranks stop at the same step
            flag = torch.tensor([float(stop)], device=self.ctx.device)
            torch.distributed.all_reduce(flag)
            stop = bool(flag.item())
        return stop

    def evaluate(self) -> dict[str, Any]:
        """Held-out loss (and, for kd, each term) of each of the task's evaluation archs (rank 0)."""
        values: dict[str, Any] = {}
        for name, arch in self.task.eval_archs().items():
            result = held_out_terms(self.module, self.eval_set, arch)
            values[f"val_loss_{name}"] = result.pop("loss")
            values |= {f"val_{term}_{name}": v for term, v in result.items()}
        return values | {f"arch_{name}": str(arch) for name, arch in self.task.eval_archs().items()}

    # ----- save ------------------------------------------------------------------------------------------------
    def save(self, step: int) -> None:
        """Checkpoint `step` and refresh the loadable result in the run folder's root (rank 0 writes; every rank
        returns only once the files exist)."""
        c = self.config
        if self.ctx.is_main:
            save_checkpoint(self.out, step, self.module, self.optimizer, {
                "config_fingerprint": c.fingerprint(), "settings": c.compute_settings(), "workers": self.workers,
                "scheduler": _jsonable(self.scheduler.state_dict()),
                "data": {"samples_seen": step * c.batch_size, "epoch": step * c.batch_size // len(self.corpus.train),
                         "train_sequences": len(self.corpus.train)}}, keep=c.keep_checkpoints)
            self.task.save(self.module.model, self.out, self.corpus.tokenizer_dir)
            if self.task.kind == "model":
                self._write_card(step)
            if self.module.projection is not None:
                state = {f"projection.{k}": v.detach().contiguous().cpu()
                         for k, v in self.module.projection.state_dict().items()}
                save_file(state, str(self.out / PROJECTION_NAME))
            for file in self.out.iterdir():  # transformers writes its weights 0600 through a private temp file
                if file.is_file() and not file.is_symlink():
                    apply_umask(file)
        self.ctx.barrier()

    def _write_card(self, step: int) -> None:
        """README.md of the further-trained model: its budget so far and the last held-out loss, beside what the
        source folder's card knows (how it was found, latency)."""
        from ..modelcard import CardInfo, Metric, write_card
        from .metrics import METRICS_NAME

        c = self.config
        last_eval: dict[str, Any] = {}
        metrics_file = self.out / METRICS_NAME
        if metrics_file.is_file():
            for line in metrics_file.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    if record.get("event") == "eval" and record.get("step", -1) <= step:
                        last_eval = record
        losses = [Metric(name=key, value=float(value), task="mlm", dataset="held-out corpus split",
                         task_type="fill-mask")
                  for key, value in last_eval.items() if key.startswith("val_loss") and isinstance(value, float)]
        training = {"objective": c.objective, "teacher": c.teacher, "steps": step, "planned steps": self.total_steps,
                    "batch size": c.batch_size, "sequences seen": step * c.batch_size,
                    "max sequence length": getattr(c, "max_seq_length", None), "learning rate": c.learning_rate,
                    "seed": c.seed, "corpus": ", ".join(str(x) for x in c.corpus)}
        info = CardInfo.of_model(self.module.model, "further-trained", source=str(c.model),
                                 training={k: v for k, v in training.items() if v is not None}, metrics=losses)
        write_card(self.out, info.inherit(c.model), name=self.out.name)


def _input_paths(c: TrainConfig) -> list[tuple[str, Any]]:
    """The paths a run reads, which its `out` must not overwrite (hub names are skipped by the check)."""
    pairs: list[tuple[str, Any]] = [("corpus", list(c.corpus)), ("tokenizer", c.tokenizer), ("teacher", c.teacher)]
    for key in ("model", "init_from", "kd_projection"):
        if getattr(c, key, None):
            pairs.append((key, getattr(c, key)))
    return pairs


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: None))


def _train(config: TrainConfig) -> Path:
    ctx = init_distributed(config.device)
    try:
        with torch_threads(config.threads):
            trainer = Trainer(config, ctx)
            trainer.setup()
            return trainer.train()
    finally:
        shutdown(ctx)


def train_supernet(config: TrainSupernetConfig | dict | str | Path) -> Path:
    """One-shot training of a SuperBERT (Algorithm 1); returns the run folder, a loadable supernet folder."""
    return _train(TrainSupernetConfig.load(config))


def train_model(config: TrainModelConfig | dict | str | Path) -> Path:
    """Further training of one extracted standalone model (paper §3.6); returns the folder of the trained model."""
    return _train(TrainModelConfig.load(config))
