"""`init_from`: a SuperBERT that starts from a pre-trained BERT, with its units ordered by importance.

What happens, in the run folder ``out`` of `train-supernet init_from=...`, before the first step:

1. before any work (`preflight`, from the trainer's constructor): the checkpoint is described from its config
   files (`autotinybert.pretrained.inspect_checkpoint`) and the space is checked against it (every dim of the max
   arch <= the checkpoint's); the tokenizer's vocabulary is checked against it before the corpus is tokenized;
2. calibration (rank 0), on `calibration_batches` batches of `batch_size` training sequences drawn from their own
   seeded stream, with the training objective (kd: against the teacher; mlm: masked LM): the importance scores
   of `importance` (`autotinybert.importance`) and, for ``depth_rule=importance``, a ranking of the layers by
   greedy removal. Progress is stored after every batch in ``out/init_from/calibration.safetensors`` (raw sums,
   written atomically), so a run killed here continues where it stopped with ``resume=true``; the result is
   ``out/init_from/ordering.safetensors`` + ``ordering.json``;
3. the checkpoint's weights, permuted by the ordering (function-preserving) and sliced to the space's max arch
   (depth rule for the layers), are copied into the supernet; the MLM head when the checkpoint has one; with the
   checkpoint as the KD teacher, the projection starts as the exact map back to the teacher's channels.

The description (checkpoint kind and arch, MLM head loaded or initialised, ordering, depth rule, layers kept) is
printed, written into ``train_config.json`` (``init_from_info``) and into the supernet's ``config.json``
(``extra.init_from``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import UserError

if TYPE_CHECKING:
    import torch

    from ..data.dataset import PreparedCorpus
    from ..importance import Ordering
    from ..pretrained import CheckpointInfo, LoadedCheckpoint
    from .config import SupernetSettings, TrainSupernetConfig
    from .distributed import DistContext
    from .objectives import StudentModule, Teacher

# Defaults with init_from, chosen by measurement (benchmarks/pretrained_init.py; docs/training.md).
DEFAULT_IMPORTANCE = "activation"
DEFAULT_DEPTH_RULE = "importance"
INIT_DIR = "init_from"
CALIBRATION_NAME = "calibration.safetensors"
ORDERING_NAME = "ordering.safetensors"
ORDERING_JSON = "ordering.json"
RANKING_BATCHES = 4  # calibration batches the layer ranking evaluates (it runs ~L^2/2 forward passes)


# ------------------------------------------------------------------------------------------- config time
def init_from_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Defaults of a config that sets init_from, for the keys it leaves out (or null): space from-init,
    objective kd with the checkpoint as teacher, the measured importance score and depth rule. Reads no file
    (a config is built without touching its paths; `preflight` checks the checkpoint)."""
    data = dict(data)
    for key, value in (("space", "from-init"), ("objective", "kd"), ("importance", DEFAULT_IMPORTANCE),
                       ("depth_rule", DEFAULT_DEPTH_RULE)):
        if data.get(key) is None:
            data[key] = value
    if data["objective"] == "kd" and not data.get("teacher"):
        data["teacher"] = data["init_from"]
    return data


def check_settings(settings: SupernetSettings) -> None:
    """Config-time checks of the keys that only make sense with init_from (no file is read)."""
    from ..space import is_from_init

    s = settings
    if s.init_from:
        return
    if is_from_init(s.space):
        raise ValueError(f"space '{s.space}' is derived from a checkpoint: set init_from=DIR_OR_HUB_NAME")
    if s.importance != "none":
        raise ValueError(f"importance '{s.importance}' orders the units of a pre-trained checkpoint: set "
                         "init_from, or importance=none")
    if s.depth_rule == "importance":
        raise ValueError("depth_rule 'importance' ranks the layers of a pre-trained checkpoint: set init_from")


def preflight(settings: SupernetSettings) -> CheckpointInfo:
    """Before any work: the checkpoint is a BERT, the space's max arch fits inside it, the sequences fit its
    position table. Reads the checkpoint's config files only; raises `InitFromError` naming the problem. (The
    pipeline's file checks call this too.)"""
    from ..pretrained import InitFromError, check_fits, inspect_checkpoint
    from ..space import SpaceError, resolve_space

    info = inspect_checkpoint(str(settings.init_from))
    try:
        space = resolve_space(settings.space, settings.init_from, settings.objective)
    except SpaceError as err:
        raise InitFromError(str(err)) from None
    check_fits(space, info)
    max_seq = getattr(settings, "max_seq_length", None)
    if max_seq is not None and max_seq > info.max_position_embeddings:
        raise InitFromError(f"max_seq_length={max_seq} exceeds init_from's max_position_embeddings="
                            f"{info.max_position_embeddings}")
    return info


def checkpoint_model_dir(init_from: str) -> str:
    """The folder (or hub name) `AutoModel` loads as the checkpoint's BERT: a sentence-transformers module's
    sub-folder when it has one."""
    from ..pretrained import inspect_checkpoint

    info = inspect_checkpoint(str(init_from))
    if info.subfolder and Path(info.location).exists():
        return str(Path(info.location) / info.subfolder)
    return info.location


def same_model(a: str | None, b: str | None) -> bool:
    """Whether two model references name the same model (folders compared after resolving)."""
    if not a or not b:
        return False
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return str(a) == str(b)


def teacher_is_checkpoint(config: SupernetSettings) -> bool:
    """Whether the KD teacher is the checkpoint itself (then the projection starts as the exact map back)."""
    from ..pretrained import bert_folder

    return config.objective == "kd" and any(same_model(bert_folder(config.teacher), ref) for ref in
                                            (config.init_from, checkpoint_model_dir(config.init_from)))


# ------------------------------------------------------------------------------------------- run folder
def clear_run_folder(out: Path) -> None:
    """Empty `out` except ``out/init_from``: a resumed run that died before its first checkpoint keeps its
    calibration's progress (which checks its own fingerprint before it is reused)."""
    for child in Path(out).iterdir():
        if child.name == INIT_DIR:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


class CalibrationStore:
    """``out/init_from``: the calibration's running sums (after every batch) and its final ordering."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = Path(folder), fingerprint

    def load_progress(self) -> tuple[int, dict[str, torch.Tensor]]:
        """(batches done, running sums) of a calibration with this fingerprint, or (0, {})."""
        from safetensors import safe_open

        file = self.folder / CALIBRATION_NAME
        if not file.is_file():
            return 0, {}
        with safe_open(str(file), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("fingerprint") != self.fingerprint:
                return 0, {}
            return int(meta["batches"]), {k: handle.get_tensor(k) for k in handle.keys()}

    def save_progress(self, batches: int, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        from ..io import atomic_path

        with atomic_path(self.folder / CALIBRATION_NAME) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                      metadata={"fingerprint": self.fingerprint, "batches": str(batches)})

    def load_ordering(self) -> tuple[Ordering, dict[str, Any]] | None:
        from safetensors.torch import load_file

        from ..importance import Ordering

        tensors_file, json_file = self.folder / ORDERING_NAME, self.folder / ORDERING_JSON
        if not (tensors_file.is_file() and json_file.is_file()):
            return None
        record = json.loads(json_file.read_text())
        if record.get("fingerprint") != self.fingerprint:
            return None
        ordering = Ordering.from_tensors(record["method"], load_file(str(tensors_file)), record.get("layer_ranking"))
        return ordering, record

    def save_ordering(self, ordering: Ordering, record: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        from ..io import atomic_path, atomic_write_json

        with atomic_path(self.folder / ORDERING_NAME) as tmp:
            save_file(ordering.tensors(), str(tmp), metadata={"fingerprint": self.fingerprint})
        atomic_write_json(self.folder / ORDERING_JSON, {**record, "fingerprint": self.fingerprint})


# ------------------------------------------------------------------------------------------- calibration
def calibration_model(checkpoint: LoadedCheckpoint, dropout: tuple[float, float], pad_token_id: int | None):
    """The checkpoint as a SuperBERT at its own arch, ``heads`` layout (plain BERT), for scoring."""
    from ..space import space_from_arch
    from ..supernet import SuperBertConfig, SuperBertForMaskedLM
    from ..pretrained import supernet_state

    info = checkpoint.info
    config = SuperBertConfig(space=space_from_arch(info.arch, "heads", name="checkpoint"), vocab_size=info.vocab_size,
                             max_position_embeddings=info.max_position_embeddings,
                             type_vocab_size=info.type_vocab_size, layer_norm_eps=info.layer_norm_eps,
                             hidden_dropout_prob=dropout[0], attention_probs_dropout_prob=dropout[1],
                             pad_token_id=pad_token_id)
    model = SuperBertForMaskedLM(config)
    model.load_state_dict(supernet_state(checkpoint, config), strict=False)
    return model


class Calibration:
    """The batches and the loss importance is measured with: the training objective at the checkpoint's arch."""

    def __init__(self, module: StudentModule, corpus: PreparedCorpus, teacher: Teacher | None, *, objective: str,
                 batches: int, batch_size: int, seed: int, device: torch.device):
        import numpy as np
        import torch

        from ..data.masking import mask_tokens, masking_spec_for
        from ..seeding import numpy_rng, torch_generator

        self.module, self.objective, self.seed, self.device = module, objective, seed, device
        self.arch = module.model.config.max_arch
        n = len(corpus.train)
        rows = numpy_rng(seed, purpose="calibration").permutation(n)[:batches * batch_size]
        if len(rows) < batches * batch_size:
            rows = np.resize(rows, batches * batch_size)  # a tiny corpus: wrap around
        masking = masking_spec_for(corpus.tokenizer)
        self.batches = []
        for b in range(batches):
            part = np.sort(rows[b * batch_size:(b + 1) * batch_size])
            ids = torch.as_tensor(np.asarray(corpus.train[part], dtype=np.int64))
            attention_mask = (ids != corpus.pad_token_id).long()
            batch = {"index": b, "attention_mask": attention_mask.to(device), "labels": None, "teacher": None}
            if objective == "mlm":
                masked = mask_tokens(ids, masking, torch_generator(seed, b, purpose="calibration-mask"))
                batch.update(input_ids=masked.input_ids.to(device), labels=masked.labels.to(device))
            else:
                batch["input_ids"] = ids.to(device)
            self.batches.append(batch)
        self.teacher = teacher

    def teacher_output(self, batch: dict[str, Any]):
        if self.objective != "kd":
            return None
        if batch["teacher"] is not None:
            return batch["teacher"]
        out = self.teacher(batch["input_ids"], batch["attention_mask"])
        if batch["index"] < RANKING_BATCHES:  # the layer ranking reads these batches many times: keep them
            batch["teacher"] = out
        return out

    def loss(self, batch: dict[str, Any], arch=None):
        arch = arch or self.arch
        return self.module(batch["input_ids"], batch["attention_mask"], arch=arch, labels=batch["labels"],
                           teacher=self.teacher_output(batch)).loss


def calibrate(checkpoint: LoadedCheckpoint, calibration: Calibration, methods: list[str], *, rank_depth: bool,
              store: CalibrationStore | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Scores of every method in `methods` (and the layer ranking when `rank_depth`), resuming from `store`.

    Returns {"scores": {method: ImportanceScores}, "layer_ranking": list | None, "layer_trace": list}."""
    import torch

    from ..importance import ActivationStats, ImportanceScores, accumulate_taylor, rank_layers
    from ..seeding import derive_seed, forked_global_rng

    arch, module = checkpoint.arch, calibration.module
    model = module.model
    done, saved = store.load_progress() if store is not None else (0, {})
    taylor = ImportanceScores.from_tensors(saved, done, "taylor.") if "taylor" in methods and done \
        else ImportanceScores.zeros(arch)
    stats = ActivationStats.from_tensors(saved, done, "activation.") if "activation" in methods and done \
        else ActivationStats.zeros(arch)
    total = len(calibration.batches)
    if done and progress:
        progress(f"calibration: resuming after {done} of {total} batches")
    for b in range(done, total):
        batch = calibration.batches[b]
        if "taylor" in methods:  # training mode: the dropout the objective trains with (see importance.py)
            module.train()
            module.zero_grad(set_to_none=True)
            with forked_global_rng(derive_seed(calibration.seed, b, purpose="calibration-dropout"),
                                   calibration.device):
                calibration.loss(batch).backward()
            accumulate_taylor(taylor, model, arch, module.projection)
            module.zero_grad(set_to_none=True)
        if "activation" in methods:
            module.eval()
            with torch.no_grad():
                model(batch["input_ids"], batch["attention_mask"], arch=arch,
                      probe=stats.recorder(batch["attention_mask"]))
        if store is not None:
            tensors = {}
            if "taylor" in methods:
                tensors |= taylor.tensors("taylor.")
            if "activation" in methods:
                tensors |= stats.tensors("activation.")
            store.save_progress(b + 1, tensors)
        if progress:
            progress(f"calibration: batch {b + 1}/{total}")
    module.eval()
    ranking, trace = None, []
    if rank_depth:
        ranking, trace = rank_layers(lambda kept: _loss_with_layers(calibration, kept), arch.layers)
    scores = {}
    if "taylor" in methods:
        scores["taylor"] = taylor
    if "activation" in methods:
        scores["activation"] = stats.scores()
    return {"scores": scores, "layer_ranking": ranking, "layer_trace": trace}


def _loss_with_layers(calibration: Calibration, kept: list[int]) -> float:
    """Mean calibration loss (eval mode) of the checkpoint running only the stored layers `kept`."""
    import torch

    config = calibration.module.model.config
    total = config.max_arch.layers
    before = (config.depth_rule, config.layer_ranking)
    # The calibration model is private to this module: its depth rule is pointed at `kept` for the evaluation.
    config.depth_rule, config.layer_ranking = "importance", kept + [i for i in range(total) if i not in kept]
    try:
        with torch.no_grad():
            arch = calibration.arch.replace(layers=len(kept))
            losses = [float(calibration.loss(batch, arch)) for batch in calibration.batches[:RANKING_BATCHES]]
    finally:
        config.depth_rule, config.layer_ranking = before
    return sum(losses) / len(losses)


# ------------------------------------------------------------------------------------------- the run's step
def calibration_fingerprint(config: TrainSupernetConfig, corpus: PreparedCorpus) -> str:
    text = json.dumps({"config": config.fingerprint(), "corpus": corpus.fingerprint}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def initialize(module: StudentModule, config: TrainSupernetConfig, corpus: PreparedCorpus, teacher: Teacher | None,
               ctx: DistContext, make_module: Callable[[Any], StudentModule]) -> dict[str, Any]:
    """Fill `module` (a fresh SuperBERT + projection) from ``config.init_from``: calibrate (rank 0, resumable in
    ``out/init_from``), order, slice, copy. Every rank returns the same description."""
    import torch

    from ..importance import Ordering, ordering_from_scores, self_distillation_projection
    from ..pretrained import load_checkpoint, supernet_layer_ranking, supernet_state
    from ..seeding import derive_seed, forked_global_rng

    c = config
    started = time.time()
    checkpoint = load_checkpoint(str(c.init_from))
    info = checkpoint.info
    model = module.model
    cut = model.config.space.attention
    store = CalibrationStore(Path(c.out) / INIT_DIR, calibration_fingerprint(c, corpus))
    needs_calibration = c.importance != "none" or c.depth_rule == "importance"
    say = _printer(ctx)
    resumed = False
    if needs_calibration:
        if ctx.is_main:
            found = store.load_ordering()
            resumed = found is not None
            if found is None:
                with forked_global_rng(derive_seed(c.seed, purpose="calibration-init")):
                    calib = make_module(calibration_model(checkpoint, (c.hidden_dropout_prob,
                                                                       c.attention_probs_dropout_prob),
                                                          corpus.pad_token_id))
                if calib.projection is not None and teacher_is_checkpoint(c):
                    with torch.no_grad():
                        calib.projection.weight.copy_(self_distillation_projection(
                            teacher.hidden, info.arch.hidden, Ordering.identity(info.arch)))
                        calib.projection.bias.zero_()
                calib.to(ctx.device)
                calibration = Calibration(calib, corpus, teacher, objective=c.objective,
                                          batches=c.calibration_batches, batch_size=c.batch_size, seed=c.seed,
                                          device=ctx.device)
                methods = [c.importance] if c.importance != "none" else []
                result = calibrate(checkpoint, calibration, methods, rank_depth=c.depth_rule == "importance",
                                   store=store, progress=say if c.progress else None)
                if methods:
                    ordering = ordering_from_scores(result["scores"][c.importance], info.arch, cut, c.importance,
                                                    result["layer_ranking"])
                else:
                    ordering = Ordering.identity(info.arch, result["layer_ranking"])
                store.save_ordering(ordering, {"method": ordering.method, "layer_ranking": ordering.layer_ranking,
                                               "layer_trace": result["layer_trace"], "cut": cut,
                                               "calibration_batches": c.calibration_batches,
                                               "batch_size": c.batch_size, "checkpoint": info.to_dict(),
                                               "seconds": round(time.time() - started, 1)})
                del calib, calibration
        ctx.barrier()
        found = store.load_ordering()
        if found is None:
            raise UserError(f"the calibration did not leave {store.folder / ORDERING_NAME}; run again with resume=true")
        ordering, record = found
    else:
        ordering, record = Ordering.identity(info.arch), {}
    if c.depth_rule == "importance":
        model.config.layer_ranking = supernet_layer_ranking(info.arch, model.config, ordering)
    state = supernet_state(checkpoint, model.config, ordering)
    missing, unexpected = model.load_state_dict(state, strict=False)
    leftover = [k for k in missing if not k.startswith("cls.")]
    if leftover or unexpected:
        raise RuntimeError(f"init_from: supernet and checkpoint tensors differ: missing {leftover[:4]}, "
                           f"unexpected {unexpected[:4]}")
    projection = "fresh"
    if module.projection is not None and teacher_is_checkpoint(c):
        with torch.no_grad():
            module.projection.weight.copy_(self_distillation_projection(teacher.hidden, module.max_hidden, ordering))
            module.projection.bias.zero_()
        projection = "identity onto the checkpoint's channels (the teacher is the checkpoint)"
    from ..pretrained import source_layers

    description = {
        "source": info.source, "kind": info.kind, "arch": str(info.arch),
        "mlm_head": "loaded from the checkpoint" if checkpoint.has_mlm_head
        else "initialised (the checkpoint has no MLM head)",
        "importance": c.importance, "depth_rule": c.depth_rule, "cut": cut,
        "checkpoint_layers": source_layers(info.arch, model.config, ordering),
        "layer_ranking": ordering.layer_ranking, "kd_projection": projection if module.projection is not None else None,
        "calibration_batches": c.calibration_batches if needs_calibration else 0,
        "ordering_files": [str(store.folder / ORDERING_NAME)] if needs_calibration else [],
        "calibration_resumed_from_store": resumed, "calibration_seconds": record.get("seconds"),
    }
    model.config.extra["init_from"] = description
    say(f"init_from {info.source} ({info.kind}, arch {info.arch}) -> supernet max arch {model.config.max_arch} "
        f"('{cut}' cut): MLM head {description['mlm_head']}; ordering {c.importance}; depth rule {c.depth_rule} "
        f"(checkpoint layers {description['checkpoint_layers']})")
    return description


def _printer(ctx: DistContext) -> Callable[[str], None]:
    """Print a line of the run's log (stderr, rank 0)."""
    def say(message: str) -> None:
        if ctx.is_main:
            print(message, file=sys.stderr, flush=True)
    return say
