"""What is trained: the two kinds of training run, behind one small interface the trainer calls.

    SupernetTask    a SuperBERT over a search space; each worker draws M archs per step (Algorithm 1)
    FixedModelTask  one extracted standalone model (further training, paper §3.6); every "draw" is its arch

The trainer never asks which kind it runs: it asks the task for the student's shape (for the teacher checks),
the model, the archs of (step, worker), the archs to evaluate, and how to save the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from torch import nn

from ..arch import Arch
from ..errors import UserError
from ..io import copy_tokenizer_files
from ..seeding import numpy_rng
from .config import TrainConfig, TrainModelConfig, TrainSupernetConfig


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


class TrainingTask(Protocol):
    kind: str  # "supernet" | "model", written to train_config.json
    student_heads: int  # attention heads of every sub-model (distillation needs the teacher's count)
    attention_cut: str | None  # the space's attention cut; None for a fixed model

    def default_tokenizer(self) -> str | None: ...
    def check_tokenizer(self, tokenizer, source: str | None) -> None: ...
    def build_model(self, tokenizer) -> nn.Module: ...
    def initialize(self, module, corpus, teacher, ctx, make_module) -> dict[str, Any] | None: ...
    def keeps_on_restart(self, out: Path) -> bool: ...
    def archs_for(self, step: int, worker: int) -> list[Arch]: ...
    def eval_archs(self) -> dict[str, Arch]: ...
    def run_info(self) -> dict[str, Any]: ...
    def save(self, model: nn.Module, out: Path, tokenizer_dir: Path) -> None: ...


class SupernetTask:
    """One-shot training of a SuperBERT over `config.space`."""

    kind = "supernet"

    def __init__(self, config: TrainSupernetConfig):
        self.config = config
        self.checkpoint = None  # init_from: the checkpoint's description (its config files only)
        if config.init_from:
            from .init_from import preflight

            self.checkpoint = preflight(config)  # a non-BERT, a too-small checkpoint: refused before any work
        self.space = config.search_space()
        self.student_heads = self.space.max_arch.heads
        self.attention_cut = self.space.attention

    def default_tokenizer(self) -> str | None:
        """init_from: the checkpoint's own tokenizer; otherwise None (a WordPiece trained on the corpus)."""
        if self.checkpoint is None:
            return None
        if self.checkpoint.tokenizer is None:
            raise UserError(f"init_from {self.checkpoint.source} has no tokenizer files (tokenizer.json / vocab.txt); "
                            "pass tokenizer= with the tokenizer it was trained with")
        return self.checkpoint.tokenizer

    def check_tokenizer(self, tokenizer, source: str | None) -> None:
        if self.checkpoint is not None:  # the word embeddings only fit the checkpoint's vocabulary
            from ..pretrained import check_vocabulary

            check_vocabulary(self.checkpoint, tokenizer, source)

    def build_model(self, tokenizer) -> nn.Module:
        from ..supernet import SuperBertConfig, SuperBertForMaskedLM

        c, ckpt = self.config, self.checkpoint
        if ckpt is None:
            shape = dict(max_position_embeddings=max(512, c.max_seq_length))
        else:  # the checkpoint's embedding tables and LayerNorm epsilon
            shape = dict(max_position_embeddings=ckpt.max_position_embeddings, type_vocab_size=ckpt.type_vocab_size,
                         layer_norm_eps=ckpt.layer_norm_eps)
        # 'importance' starts from the stored order; `initialize` puts the calibration's ranking in
        ranking = list(range(self.space.max_arch.layers)) if c.depth_rule == "importance" else None
        return SuperBertForMaskedLM(SuperBertConfig(
            space=self.space, vocab_size=len(tokenizer), **shape,
            hidden_dropout_prob=c.hidden_dropout_prob, attention_probs_dropout_prob=c.attention_probs_dropout_prob,
            pad_token_id=tokenizer.pad_token_id, depth_rule=c.depth_rule, layer_ranking=ranking,
            extra={"objective": c.objective, "teacher": c.teacher}))

    def initialize(self, module, corpus, teacher, ctx, make_module) -> dict[str, Any] | None:
        """init_from: fill the fresh supernet from the checkpoint (calibration, ordering, slicing); else nothing."""
        if self.checkpoint is None:
            return None
        from .init_from import initialize

        return initialize(module, self.config, corpus, teacher, ctx, make_module)

    def keeps_on_restart(self, out: Path) -> bool:
        """A restarted init_from run keeps the calibration progress in ``out/init_from``."""
        from .init_from import INIT_DIR

        return self.checkpoint is not None and (Path(out) / INIT_DIR).is_dir()

    def archs_for(self, step: int, worker: int) -> list[Arch]:
        c = self.config
        return draw_archs(self.space, c.seed, step, worker, c.archs_per_step, c.sandwich)

    def eval_archs(self) -> dict[str, Arch]:
        return {"max": self.space.max_arch, "min": self.space.min_arch}

    def run_info(self) -> dict[str, Any]:
        info = {"kind": self.kind, "space_resolved": self.space.to_dict()}
        if self.checkpoint is not None:
            from ..space import from_init_cut

            info["init_from_checkpoint"] = self.checkpoint.to_dict()
            if self.config.space == "from-init":
                info["space_cut_reason"] = from_init_cut(self.checkpoint.arch, self.config.objective)[1]
        return info

    def save(self, model: nn.Module, out: Path, tokenizer_dir: Path) -> None:
        model.save_pretrained(out, tokenizer_dir=tokenizer_dir)


class FixedModelTask:
    """Further training of the AutoTinyBert folder `config.model` (written by `autotinybert extract`)."""

    kind = "model"
    attention_cut = None

    def __init__(self, config: TrainModelConfig):
        from transformers import AutoConfig

        import autotinybert  # noqa: F401  (registers the autotinybert model type)

        self.config = config
        folder = Path(config.model)
        if not (folder / "config.json").is_file():
            raise UserError(f"model={folder} is not a model folder (no config.json); pass a folder written "
                            "by `autotinybert extract`")
        self.model_config = AutoConfig.from_pretrained(folder)
        if not hasattr(self.model_config, "arch"):
            raise UserError(f"model={folder} is a {self.model_config.model_type!r} model; train-model expects "
                            "an AutoTinyBert folder written by `autotinybert extract`")
        self.arch: Arch = self.model_config.arch
        self.student_heads = self.arch.heads
        if config.max_seq_length > self.model_config.max_position_embeddings:
            raise UserError(f"max_seq_length={config.max_seq_length} exceeds the model's "
                            f"max_position_embeddings={self.model_config.max_position_embeddings}")

    def default_tokenizer(self) -> str | None:
        """An extracted model folder carries its tokenizer."""
        return self.config.model if (Path(self.config.model) / "tokenizer_config.json").is_file() else None

    def check_tokenizer(self, tokenizer, source: str | None) -> None:
        if self.model_config.vocab_size != len(tokenizer):
            named = f"the tokenizer {source}" if source else "the tokenizer"
            raise UserError(f"model {self.config.model} has vocab_size {self.model_config.vocab_size} but {named} "
                            f"has {len(tokenizer)} tokens; use the model's own tokenizer")

    def build_model(self, tokenizer) -> nn.Module:
        from transformers import AutoModelForMaskedLM

        c = self.config
        return AutoModelForMaskedLM.from_pretrained(c.model, hidden_dropout_prob=c.hidden_dropout_prob,
                                                    attention_probs_dropout_prob=c.attention_probs_dropout_prob)

    def archs_for(self, step: int, worker: int) -> list[Arch]:
        return [self.arch] * self.config.archs_per_step

    def eval_archs(self) -> dict[str, Arch]:
        return {"model": self.arch}

    def run_info(self) -> dict[str, Any]:
        return {"kind": self.kind, "space_resolved": None}

    def initialize(self, module, corpus, teacher, ctx, make_module) -> None:
        return None  # the model folder's weights are the start

    def keeps_on_restart(self, out: Path) -> bool:
        return False

    def save(self, model: nn.Module, out: Path, tokenizer_dir: Path) -> None:
        model.save_pretrained(out)
        copy_tokenizer_files(tokenizer_dir, out)


def make_task(config: TrainConfig) -> TrainingTask:
    return SupernetTask(config) if isinstance(config, TrainSupernetConfig) else FixedModelTask(config)
