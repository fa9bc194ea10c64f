"""Algorithm 1 (batch-wise one-shot training) and further training of one model, on DDP.

Each optimizer step:
  the global batch of `batch_size` sequences is split into N sub-batches, one per Algorithm-1 worker
  (N = `workers`, default the number of processes; a process may play several workers in turn);
  every worker w draws M = `archs_per_step` archs from a generator seeded by (seed, step, w, m) and accumulates
  the gradient of each arch on its sub-batch (fresh masks per (step, w, m), the teacher run once per sub-batch);
  DDP averages the gradients over processes; one clipped AdamW update.

Because every draw (arch, mask, dropout) depends only on (seed, step, worker, m, micro-batch), a run is
reproducible, resumes exactly, and gives the same parameters whether N workers run as N processes or as one.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ..arch import Arch
from ..errors import UserError
from ..io import atomic_write_json, copy_tokenizer_files
from .checkpoint import check_compatible, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, TrainConfigError, TrainModelConfig, TrainSupernetConfig
from .distributed import DistContext, init_distributed, shutdown
from .objectives import StudentModule, Teacher, describe_teacher
from .seeding import derive_seed, numpy_rng, torch_generator
from .validation import PROJECTION_NAME, RUN_CONFIG_NAME, VALIDATION_NAME, EvalSet, evaluate

METRICS_NAME = "metrics.jsonl"


# ----- building blocks -------------------------------------------------------------------------

def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices only; none on biases, LayerNorm and (BERT convention)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def linear_schedule(total_steps: int, warmup_steps: int):
    """Linear warm-up to the peak LR, then linear decay to 0 at `total_steps`."""
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def draw_archs(space, seed: int, step: int, worker: int, count: int, sandwich: bool) -> list[Arch]:
    """The M archs of one worker at one step; arch m comes from its own generator (seed, step, worker, m)."""
    archs = []
    for m in range(count):
        if sandwich and m == 0:
            archs.append(space.max_arch)
        elif sandwich and m == 1:
            archs.append(space.min_arch)
        else:
            archs.append(space.sample(numpy_rng(seed, step, worker, m, purpose="arch")))
    return archs


def batch_rows(step: int, batch_size: int, n_train: int, seed: int) -> np.ndarray:
    """Rows of the global batch of `step`: consecutive slices of a per-epoch seeded permutation."""
    start = step * batch_size
    rows = []
    epoch_cache: dict[int, np.ndarray] = {}
    for sample in range(start, start + batch_size):
        epoch, pos = divmod(sample, n_train)
        if epoch not in epoch_cache:
            epoch_cache[epoch] = numpy_rng(seed, epoch, purpose="shuffle").permutation(n_train)
        rows.append(epoch_cache[epoch][pos])
    return np.asarray(rows)


@contextlib.contextmanager
def seeded_dropout(seed: int, device: torch.device):
    """Run dropout from a forked, locally seeded global generator (torch dropout takes no generator argument);
    the caller's global RNG state is restored afterwards, so nothing global is reseeded."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# ----- the run ---------------------------------------------------------------------------------

class _Run:
    """State of one training run (one process of it)."""

    def __init__(self, config: TrainConfig, ctx: DistContext):
        self.config, self.ctx = config, ctx
        self.fresh_start = False
        self.out = Path(config.out)
        self.is_supernet = isinstance(config, TrainSupernetConfig)

    # -- checks that must happen before any long work --
    def preflight(self) -> None:
        c = self.config
        if not c.out:
            raise TrainConfigError("out (--out DIR) is required: the folder the run writes")
        from ..data.corpus import list_corpus_files

        list_corpus_files(c.corpus)  # missing / empty corpus -> clear error now
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out} exists and is not a folder")
        non_empty = self.out.is_dir() and any(self.out.iterdir())
        self.checkpoint = latest_checkpoint(self.out) if c.resume else None
        if non_empty and not c.resume and not c.overwrite:
            raise UserError(f"output folder {self.out} is not empty; pass --resume to continue its run, "
                            "--overwrite to replace it, or choose a new folder")
        if c.resume and non_empty and self.checkpoint is None:
            if not (self.out / RUN_CONFIG_NAME).is_file():
                raise UserError(f"--resume: {self.out} holds no checkpoint (checkpoints/step-*) to resume from")
            self.fresh_start = True  # our own run stopped before its first checkpoint: start it again
        if self.checkpoint is not None:
            check_compatible(self.checkpoint, c.fingerprint(), c.compute_settings())
        self.workers = c.workers or self.ctx.world_size
        if self.checkpoint is not None and self.checkpoint.state.get("workers", self.workers) != self.workers:
            from .checkpoint import CheckpointError

            raise CheckpointError(f"checkpoint {self.checkpoint.path} was trained with {self.checkpoint.state['workers']} "
                                  f"Algorithm-1 workers, this run has {self.workers}; pass --workers "
                                  f"{self.checkpoint.state['workers']} (any number of processes that divides it)")
        if self.workers % self.ctx.world_size:
            raise TrainConfigError(f"workers={self.workers} must be a multiple of the number of processes "
                                   f"({self.ctx.world_size})")
        if c.batch_size % (self.workers * c.grad_accum):
            raise TrainConfigError(f"batch_size={c.batch_size} must be divisible by workers x grad_accum = "
                                   f"{self.workers} x {c.grad_accum}")
        if self.is_supernet:
            from ..space import SearchSpace

            self.space = SearchSpace.load(c.space)
        else:
            model_dir = Path(c.model)
            if not (model_dir / "config.json").is_file():
                raise UserError(f"--model {model_dir} is not a model folder (no config.json); pass a folder written "
                                "by `autotinybert extract`")
        self.teacher = Teacher(c.teacher, self.ctx.device) if c.objective == "kd" else None
        self.tokenizer_source = c.tokenizer
        if c.tokenizer is None and not self.is_supernet and (Path(c.model) / "tokenizer_config.json").is_file():
            self.tokenizer_source = c.model  # an extracted model folder carries its tokenizer
        if self.tokenizer_source is not None:  # vocabulary / teacher checks now, before tokenizing the corpus
            from ..data.tokenizer import load_tokenizer

            tok = load_tokenizer(self.tokenizer_source)
            if self.is_supernet:
                heads, cut = self.space.max_arch.heads, self.space.attention
            else:
                from transformers import AutoConfig

                import autotinybert  # noqa: F401

                model_config = AutoConfig.from_pretrained(c.model)
                heads, cut = model_config.num_attention_heads, None
                if c.max_seq_length > model_config.max_position_embeddings:
                    raise UserError(f"max_seq_length={c.max_seq_length} exceeds the model's "
                                    f"max_position_embeddings={model_config.max_position_embeddings}")
                if model_config.vocab_size != len(tok):
                    raise UserError(f"model {c.model} has vocab_size {model_config.vocab_size} but the tokenizer "
                                    f"{self.tokenizer_source} has {len(tok)} tokens; use the model's own tokenizer")
            if self.teacher is not None:
                self.teacher.check_student(heads, cut, tok)
        if c.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError:
                raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard") from None

    def prepare_data(self) -> None:
        from ..data.dataset import prepare_corpus

        c = self.config
        tokenizer = self.tokenizer_source
        kwargs = dict(max_seq_length=c.max_seq_length, cache_dir=c.cache_dir, val_fraction=c.val_fraction,
                      val_max_sequences=c.val_max_sequences, tokenizer_vocab_size=c.tokenizer_vocab_size)
        if self.ctx.is_main:  # rank 0 builds the cache; the others then find it
            self.corpus = prepare_corpus(c.corpus, tokenizer, progress=c.progress, **kwargs)
        self.ctx.barrier()
        if not self.ctx.is_main:
            self.corpus = prepare_corpus(c.corpus, tokenizer, progress=False, **kwargs)
        n = len(self.corpus.train)
        if n < c.batch_size:
            raise UserError(f"the corpus packs into {n} training sequences, fewer than batch_size={c.batch_size}; "
                            "add text or lower --batch-size")

    def build_model(self) -> None:
        c, tok = self.config, self.corpus.tokenizer
        with torch.random.fork_rng(devices=[]):  # BERT init from a seeded stream, global RNG untouched
            torch.manual_seed(derive_seed(c.seed, purpose="init"))
            if self.is_supernet:
                from ..supernet import SuperBertConfig, SuperBertForMaskedLM

                sc = SuperBertConfig(space=self.space, vocab_size=len(tok),
                                     max_position_embeddings=max(512, c.max_seq_length),
                                     hidden_dropout_prob=c.hidden_dropout_prob,
                                     attention_probs_dropout_prob=c.attention_probs_dropout_prob,
                                     pad_token_id=tok.pad_token_id,
                                     extra={"objective": c.objective, "teacher": c.teacher})
                model = SuperBertForMaskedLM(sc)
                self.arch_heads, self.attention_cut = self.space.max_arch.heads, self.space.attention
            else:
                from transformers import AutoModelForMaskedLM

                import autotinybert  # noqa: F401  (registers the autotinybert model type)

                model = AutoModelForMaskedLM.from_pretrained(
                    c.model, hidden_dropout_prob=c.hidden_dropout_prob,
                    attention_probs_dropout_prob=c.attention_probs_dropout_prob)
                if not hasattr(model.config, "arch"):
                    raise UserError(f"--model {c.model} is a {model.config.model_type!r} model; train-model expects "
                                    "an AutoTinyBert folder written by `autotinybert extract`")
                self.fixed_arch = model.config.arch
                self.arch_heads, self.attention_cut = self.fixed_arch.heads, None
                if model.config.vocab_size != len(tok):
                    raise UserError(f"model {c.model} has vocab_size {model.config.vocab_size} but the tokenizer "
                                    f"has {len(tok)} tokens; use the model's own tokenizer")
            if self.teacher is not None:
                self.teacher.check_student(self.arch_heads, self.attention_cut, tok)
            self.module = StudentModule(model, c.objective, self.teacher.hidden if self.teacher else None,
                                        c.kd_attention_weight, c.kd_hidden_weight).to(self.ctx.device)
        self.model = model
        if self.is_supernet and c.objective == "mlm" and len(tok) != model.config.vocab_size:
            raise UserError("tokenizer / supernet vocabulary mismatch")  # cannot happen: built from the tokenizer

    def archs_for(self, step: int, worker: int) -> list[Arch]:
        c = self.config
        if self.is_supernet:
            return draw_archs(self.space, c.seed, step, worker, c.archs_per_step, c.sandwich)
        return [self.fixed_arch] * c.archs_per_step

    def eval_archs(self) -> dict[str, Arch]:
        if self.is_supernet:
            return {"max": self.space.max_arch, "min": self.space.min_arch}
        return {"model": self.fixed_arch}

    # -- output folder --
    def write_run_files(self) -> None:
        c, out = self.config, self.out
        if out.exists() and ((c.overwrite and not c.resume) or self.fresh_start):
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / RUN_CONFIG_NAME, {
            **c.to_dict(), "kind": "supernet" if self.is_supernet else "model",
            "space_resolved": self.space.to_dict() if self.is_supernet else None,
            "world_size": self.ctx.world_size, "resolved_workers": self.workers, "total_steps": self.total_steps,
            "corpus_cache": str(self.corpus.cache_dir), "corpus_fingerprint": self.corpus.fingerprint,
            "corpus_stats": self.corpus.stats, "tokenizer_dir": str(self.corpus.tokenizer_dir),
            "teacher_info": describe_teacher(self.teacher), "config_fingerprint": c.fingerprint()})
        val = torch.as_tensor(np.asarray(self.corpus.validation, dtype=np.int32))
        save_file({"input_ids": val}, str(out / VALIDATION_NAME))
        copy_tokenizer_files(self.corpus.tokenizer_dir, out)

    def save_outputs(self) -> None:
        """The loadable result in the run folder's root (also refreshed at every checkpoint)."""
        if self.is_supernet:
            self.model.save_pretrained(self.out, tokenizer_dir=self.corpus.tokenizer_dir)
        else:
            self.model.save_pretrained(self.out)
            copy_tokenizer_files(self.corpus.tokenizer_dir, self.out)
        if self.module.projection is not None:
            state = {f"projection.{k}": v.detach().contiguous().cpu()
                     for k, v in self.module.projection.state_dict().items()}
            save_file(state, str(self.out / PROJECTION_NAME))

    # -- the loop --
    def run(self) -> Path:
        c, ctx = self.config, self.ctx
        self.preflight()
        self.prepare_data()
        self.build_model()
        n_train = len(self.corpus.train)
        self.total_steps = c.max_steps or max(1, math.ceil(c.epochs * n_train / c.batch_size))
        optimizer = torch.optim.AdamW(parameter_groups(self.module, c.weight_decay), lr=c.lr,
                                      betas=(c.adam_beta1, c.adam_beta2), eps=c.adam_eps)
        warmup = int(c.warmup_ratio * self.total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(self.total_steps, warmup))
        start_step = 0
        if self.checkpoint is not None:
            load_checkpoint(self.checkpoint, self.module, optimizer)
            scheduler.load_state_dict(self.checkpoint.state["scheduler"])
            torch.set_rng_state(torch.tensor(self.checkpoint.state["rng"]["torch_cpu"], dtype=torch.uint8))
            start_step = self.checkpoint.step
        if ctx.is_main:
            self.write_run_files()
        ctx.barrier()
        if ctx.distributed:
            # find_unused_parameters: a sub-model leaves whole layers (those past its depth) out of the graph;
            # DDP must be told, or it waits for their gradients forever. The graph changes every step, so
            # static_graph does not apply.
            from torch.nn.parallel import DistributedDataParallel as DDP

            engine = DDP(self.module, device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
                         find_unused_parameters=True)
        else:
            engine = self.module
        metrics = MetricsLog(self.out / METRICS_NAME, start_step, enabled=ctx.is_main,
                             tensorboard=c.tensorboard and ctx.is_main)
        eval_set = None
        if ctx.is_main:
            eval_set = EvalSet(self.corpus.validation[:c.eval_sequences], self.corpus.pad_token_id, c.objective,
                               32, c.seed, _masking(self.corpus.tokenizer), self.teacher, ctx.device)
            if start_step == 0:
                metrics.eval(0, self.evaluate(eval_set))
        self.module.train()
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total_steps, initial=start_step, desc="train", disable=not (ctx.is_main and c.progress),
                   dynamic_ncols=True)
        started = time.perf_counter()
        step = start_step
        while step < self.total_steps:
            t0 = time.perf_counter()
            loss, tokens, archs = self.train_step(engine, optimizer, step)
            scheduler.step()
            step += 1
            seconds = time.perf_counter() - t0
            lr = scheduler.get_last_lr()[0]
            if ctx.is_main:
                if step % c.log_every == 0 or step == self.total_steps:
                    metrics.step(step, loss=loss, lr=lr, tokens=tokens, seconds=seconds, archs=archs)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens / seconds:,.0f}", refresh=False)
                bar.update(1)
            stop = (c.stop_after is not None and step >= c.stop_after) or (
                c.time_budget_s is not None and time.perf_counter() - started >= c.time_budget_s)
            if ctx.distributed and c.time_budget_s is not None:  # all ranks stop at the same step
                flag = torch.tensor([float(stop)], device=ctx.device)
                torch.distributed.all_reduce(flag)
                stop = bool(flag.item())
            done = step == self.total_steps or stop
            if ctx.is_main and (step % c.eval_every == 0 or done):
                metrics.eval(step, self.evaluate(eval_set))
            checkpoint = step % c.checkpoint_every == 0 or done
            if ctx.is_main and checkpoint:
                save_checkpoint(self.out, step, self.module, optimizer, {
                    "config_fingerprint": c.fingerprint(), "settings": c.compute_settings(), "workers": self.workers,
                    "scheduler": _jsonable(scheduler.state_dict()),
                    "rng": {"torch_cpu": torch.get_rng_state().tolist()},
                    "data": {"samples_seen": step * c.batch_size, "epoch": step * c.batch_size // n_train,
                             "train_sequences": n_train}}, keep=c.keep_checkpoints)
                self.save_outputs()
            if checkpoint:  # the other ranks wait for the files (and return only once they exist)
                ctx.barrier()
            if stop:
                break
        bar.close()
        metrics.close()
        return self.out

    def evaluate(self, eval_set: EvalSet) -> dict[str, Any]:
        return {f"val_loss_{name}": evaluate(self.module, eval_set, arch) for name, arch in self.eval_archs().items()} | {
            f"arch_{name}": str(arch) for name, arch in self.eval_archs().items()}

    def train_step(self, engine: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> tuple[float, int, list]:
        c, ctx, dev = self.config, self.ctx, self.ctx.device
        rows = batch_rows(step, c.batch_size, len(self.corpus.train), c.seed)
        ids_all = torch.as_tensor(np.asarray(self.corpus.train[np.sort(rows)], dtype=np.int64))
        ids_all = ids_all[torch.as_tensor(np.argsort(np.argsort(rows)))]  # back to the permutation's order
        sub = c.batch_size // self.workers
        micro = sub // c.grad_accum
        per_process = self.workers // ctx.world_size
        my_workers = range(ctx.rank * per_process, (ctx.rank + 1) * per_process)
        n_backward = per_process * c.archs_per_step * c.grad_accum
        # each backward's share of the mean over all workers' M x accum losses; DDP then averages over processes
        scale = ctx.world_size / (self.workers * c.archs_per_step * c.grad_accum)
        masking = _masking(self.corpus.tokenizer)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext())
        loss_sum, count, done = 0.0, 0, 0
        all_archs = [[str(a) for a in self.archs_for(step, w)] for w in range(self.workers)]
        for w in my_workers:
            archs = self.archs_for(step, w)
            ids_w = ids_all[w * sub:(w + 1) * sub]
            teacher_out = {}
            for m, arch in enumerate(archs):
                for a in range(c.grad_accum):
                    ids = ids_w[a * micro:(a + 1) * micro]
                    attention_mask = (ids != self.corpus.pad_token_id).long().to(dev)
                    labels = None
                    if c.objective == "mlm":
                        from ..data.masking import mask_tokens

                        masked = mask_tokens(ids, masking, torch_generator(c.seed, step, w, m, a, purpose="mask"))
                        inputs, labels = masked.input_ids.to(dev), masked.labels.to(dev)
                    else:
                        inputs = ids.to(dev)
                        if a not in teacher_out:  # once per sub-batch, shared by the M archs
                            with autocast:
                                teacher_out[a] = self.teacher(inputs, attention_mask)
                    done += 1
                    sync = contextlib.nullcontext() if (done == n_backward or not ctx.distributed) else engine.no_sync()
                    with sync, seeded_dropout(derive_seed(c.seed, step, w, m, a, purpose="dropout"), dev):
                        with autocast:
                            loss = engine(inputs, attention_mask, arch=arch, labels=labels,
                                          teacher=teacher_out.get(a))
                        (loss * scale).backward()
                    loss_sum += float(loss.detach())
                    count += 1
        for p in self.module.parameters():  # untouched parameters get a zero gradient, as under DDP on any rank
            if p.grad is None and p.requires_grad:
                p.grad = torch.zeros_like(p)
        if c.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), c.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        totals = torch.tensor([loss_sum, float(count), float((ids_all != self.corpus.pad_token_id).sum())])
        if ctx.distributed:
            totals = totals.to(dev)
            torch.distributed.all_reduce(totals)
            totals = totals.cpu()
            totals[2] /= ctx.world_size  # every process holds the whole global batch
        return float(totals[0] / totals[1]), int(totals[2]), all_archs


def _masking(tokenizer):
    from ..data.masking import masking_spec_for

    return masking_spec_for(tokenizer)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: None))


class MetricsLog:
    """Append-only JSONL of step and eval records (rank 0); on resume, records after the checkpoint are dropped."""

    def __init__(self, path: Path, start_step: int, enabled: bool, tensorboard: bool = False):
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if path.exists():  # keep only what the resumed state has already seen
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= start_step]
            from ..io import atomic_write_text

            atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        self.handle = open(path, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(path.parent / "tensorboard"))

    def _write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def step(self, step: int, *, loss: float, lr: float, tokens: int, seconds: float, archs: list) -> None:
        if not self.enabled:
            return
        self._write({"event": "step", "step": step, "loss": loss, "lr": lr, "tokens": tokens,
                     "seconds": round(seconds, 4), "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
                     "archs": archs, "time": time.time()})
        if self.writer:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def eval(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._write({"event": "eval", "step": step, **values, "time": time.time()})
        if self.writer:
            for key, value in values.items():
                if isinstance(value, float):
                    self.writer.add_scalar(f"val/{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.handle.close()
            if self.writer:
                self.writer.close()


def _coerce(config: Any, cls: type[TrainConfig]) -> TrainConfig:
    if isinstance(config, cls):
        return config
    if isinstance(config, dict):
        return cls.from_dict(config)
    if isinstance(config, (str, Path)):
        return cls.from_yaml(config)
    raise TrainConfigError(f"expected a {cls.__name__}, a dict or a YAML path, got {type(config).__name__}")


def _train(config: TrainConfig) -> Path:
    ctx = init_distributed(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _Run(config, ctx).run()
    finally:
        shutdown(ctx)


def train_supernet(config: TrainSupernetConfig | dict | str | Path) -> Path:
    """One-shot training of a SuperBERT (Algorithm 1); returns the run folder, a loadable supernet folder."""
    return _train(_coerce(config, TrainSupernetConfig))


def train_model(config: TrainModelConfig | dict | str | Path) -> Path:
    """Further training of one extracted standalone model (paper §3.6); returns the folder of the trained model."""
    return _train(_coerce(config, TrainModelConfig))
