"""Stage fingerprints, generated from the pipeline config and the stages' input types (no stage runs).

For every leaf of the PipelineConfig, change it (the first valid change of its value) and rebuild every stage's
inputs with fake upstream outputs of the right types:

* each stage whose inputs hold that value gets a new fingerprint, and so does every stage downstream of it
  (chained through the upstream stages' ids, as `StageRunner` does);
* every other stage keeps its own fingerprint;
* every leaf field of every stage's input type is fed by some config key or by an upstream stage's outputs;
* only `out`, `progress` (display only) and the settings of a task that is not fine-tuned reach no fingerprint.
"""

from __future__ import annotations

import typing
from functools import cache

import pytest

from autotinybert.config import Config, ConfigError
from autotinybert.pipeline.config import PipelineConfig
from autotinybert.pipeline.plan import plan
from autotinybert.pipeline.stage_types import ModelEntry
from autotinybert.pipeline.stages import fingerprint

SPACE = {"attention": "heads", "layers": [1, 3], "hidden": [16, 48, 16], "ffn": [32, 192, 8], "heads": [1, 3],
         "head_size": 16}


class Unchecked(PipelineConfig):
    """The pipeline config without its file checks: nothing here reads or writes a file."""

    def check_files(self) -> None:
        pass


def base_dict(evaluator: str = "finetune") -> dict:
    """A finetune-evaluated search, the fast rule beside it and one of each kind of optional setting."""
    return {
        "out": "/fp/run", "seed": 0, "progress": False,
        "data": {"corpus": ["/fp/corpus.txt"], "downstream": "/fp/data", "tokenizer": "/fp/tok",
                 "cache_dir": "/fp/cache", "tokenizer_vocab_size": 300, "max_seq_length": 32},
        "supernet": {"space": SPACE, "batch_size": 8, "learning_rate": 2e-3, "max_steps": 6, "threads": 1,
                     "workers": 1, "teacher": "/fp/teacher", "stop_after": 5, "time_budget_s": 60.0},
        "latency": {"archs": 20, "seq_len": 32, "clock": "cpu", "baseline_head_size": 16},
        "predictor": {"kind": "analytic", "folds": 3},
        "search": {"speedups": [200], "window": [0.4, 2.5], "evaluator": evaluator, "tasks": ["docpair"],
                   "budget": {"max_steps": 5}, "fast": True, "fast_pool": 2, "threads": 1},
        "further_train": {"max_steps": 4, "threads": 1, "workers": 1, "teacher": "/fp/teacher", "stop_after": 3,
                          "time_budget_s": 60.0},
        "finetune": {"tasks": ["docpair"],
                     "config": {"learning_rate": 1e-3, "epochs": 1, "batch_size": 16, "max_seq_length": 32,
                                "eval_every": 4, "max_train_examples": 64, "max_steps": 8, "max_eval_examples": 32,
                                "squad_article_split": 0.8, "threads": 1},
                     "task_configs": {"docpair": {"max_eval_examples": 24}, "sst2": {"epochs": 2}}},
    }


BASE = Unchecked.from_dict(base_dict())
STRINGS = ("loss", "finetune", "sst2", "cpu", "dims", "b")  # values other keys need, for a str leaf's change


# ------------------------------------------------------------------------------------- the config's leaves
def leaves(data, prefix=()):
    """Paths of every value that is not a mapping (a mapping's entries are leaves of their own)."""
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, prefix + (key,))
        else:
            yield prefix + (key,)


def get(data, path):
    for key in path:
        data = data[key]
    return data


def with_value(data, path, value):
    if not path:
        return value
    return {**data, path[0]: with_value(data[path[0]], path[1:], value)}


def annotation_at(path):
    """The declared type of the config key at `path` (Any inside mappings)."""
    current = PipelineConfig
    for key in path:
        if not (isinstance(current, type) and issubclass(current, Config)):
            return typing.Any
        current = current.model_fields[key].annotation
        inner = [a for a in typing.get_args(current) if a is not type(None)]
        if typing.get_origin(current) in (typing.Union, type(int | None)) and len(inner) == 1:
            current = inner[0]
    return current


def variants(value, annotation):
    """Candidate changes of one value, most natural first."""
    if typing.get_origin(annotation) is typing.Literal:
        return [a for a in typing.get_args(annotation) if a != value]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value * 2, value - 1]
    if isinstance(value, float):
        return [value * 1.5, value * 0.5, value + 0.1]
    if isinstance(value, str):
        return [f"{value}-b", *STRINGS]
    if isinstance(value, list):
        return [value[:i] + [v] + value[i + 1:] for i in reversed(range(len(value)))
                for v in variants(value[i], typing.Any)] + [value + value[-1:]] if value else [["b"], [1]]
    if value is None:
        return [1, 0.5, "b", True]
    return []


# keys that only change once another is set: path -> (that key's path, its value)
REQUIRES = {("supernet", "importance"): (("supernet", "init_from"), "/fp/checkpoint"),
            ("search", "speedup_over"): (("supernet", "init_from"), "/fp/checkpoint")}


@pytest.fixture(autouse=True)
def no_checkpoint_reads(monkeypatch):
    """The plan reads an init_from checkpoint's arch and folder from its config; here there is no file to read."""
    import autotinybert.pipeline.plan as plan_module

    monkeypatch.setattr(plan_module, "init_arch", lambda cfg: "2-48-96-3-48" if cfg.supernet.init_from else None)
    monkeypatch.setattr(plan_module, "_init_dir", lambda cfg: cfg.supernet.init_from)


@cache
def changed(path):
    """The config with the value at `path` changed (the first change that validates and sticks), or None."""
    data = BASE.to_dict()
    if path in REQUIRES:
        data = with_value(data, *REQUIRES[path])
    for candidate in variants(get(data, path), annotation_at(path)):
        try:
            cfg = Unchecked.from_dict(with_value(data, path, candidate))
        except ConfigError:
            continue
        if get(cfg.to_dict(), path) != get(data, path):
            return cfg
    return None


# keys that cannot change alone (the other space keys show what the space reaches)
COUPLED = {("supernet", "space", "attention"): "'dims' needs a qkv range instead of head_size"}
LEAVES = sorted(set(leaves(BASE.to_dict())) - set(COUPLED))


@pytest.mark.parametrize("path", [*LEAVES, *COUPLED], ids=[".".join(p) for p in [*LEAVES, *COUPLED]])
def test_every_leaf_has_a_valid_change(path):
    if path in COUPLED:
        assert changed(path) is None, f"{'.'.join(path)} changes alone now: drop it from COUPLED"
    else:
        assert changed(path) is not None, f"no valid change of {'.'.join(path)}: teach `variants` one"


# ------------------------------------------------------------------------------------- the stages' inputs
def fake(annotation):
    """A value of the annotated type (fake upstream outputs)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Config):
        return annotation(**{k: fake(f.annotation) for k, f in annotation.model_fields.items()})
    if origin is typing.Literal:
        return args[0]
    if origin in (typing.Union, type(int | None)):
        return fake(next(a for a in args if a is not type(None)))
    if origin is list:
        return [fake(args[0])]
    if origin is dict:
        return {}
    return {str: "/fake", float: 1.0, int: 1, bool: True}.get(annotation, "/fake")


def stage_values(cfg):
    """stage -> (inputs, fingerprint chained through the upstream stages, own fingerprint with fixed upstream
    ids), the stages built from `plan` with fake upstream outputs."""
    stages = plan(cfg)
    chained, out = {}, {}
    for stage in stages:
        inputs = stage.inputs(cfg, {u: fake(next(s.outputs for s in stages if s.name == u)) for u in stage.upstream})
        chained[stage.name] = fingerprint(inputs, [f"{chained[u]}:{chained[u]}" for u in stage.upstream])
        out[stage.name] = (inputs, chained[stage.name], fingerprint(inputs, [f"{u}:done" for u in stage.upstream]))
    return out


def upstream(cfg):
    return {s.name: s.upstream for s in plan(cfg)}


def downstream(cfg):
    """stage -> every stage that reads it, directly or not."""
    after = {s.name: set() for s in plan(cfg)}
    for stage in reversed(plan(cfg)):
        for u in stage.upstream:
            after[u] |= {stage.name} | after[stage.name]
    return after


@cache
def base_values():
    return stage_values(BASE)


@cache
def effect(path):
    """(stages that read the value at `path`, base values, changed values)."""
    before, after = base_values(), stage_values(changed(path))
    reads = {name for name, (inputs, _, _) in before.items()  # what it reads, or which stages it reads from
             if name not in after or after[name][0].fingerprint_data() != inputs.fingerprint_data()
             or upstream(changed(path))[name] != upstream(BASE)[name]}
    return reads, before, after


def test_the_plan_has_every_kind_of_stage():
    assert [s.name for s in plan(BASE)] == ["tokenize", "latency", "predictor", "supernet", "search-200x",
                                            "fast-200x", "extract", "further-train", "baselines", "finetune",
                                            "report"]


@pytest.mark.parametrize("path", LEAVES, ids=[".".join(p) for p in LEAVES])
def test_a_change_reruns_the_stages_that_read_it_and_everything_after(path):
    reads, before, after = effect(path)
    rerun = reads | {d for s in reads for d in downstream(BASE)[s]}
    for name, (_, chained, own) in before.items():
        if name not in after:  # a renamed or dropped stage (search.speedups, search.fast)
            assert name in reads
            continue
        assert (after[name][2] != own) == (name in reads), f"{name}: own fingerprint"
        assert (after[name][1] != chained) == (name in rerun), f"{name}: fingerprint chained to its upstream"


def input_fields(cls, prefix=""):
    """Leaf fields of an input type, upstream outputs left out (list items as `name[]`)."""
    upstream_types = {s.outputs for s in plan(BASE)} | {ModelEntry}
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if typing.get_origin(annotation) is list and isinstance(typing.get_args(annotation)[0], type):
            annotation, name = typing.get_args(annotation)[0], f"{name}[]"
        optional = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, type(int | None)) and len(optional) == 1:
            annotation = optional[0]
        if annotation in upstream_types or (typing.get_origin(annotation) is typing.Literal
                                             and len(typing.get_args(annotation)) == 1):
            continue  # an upstream stage's outputs, or a constant of the code (the report's version)
        if isinstance(annotation, type) and issubclass(annotation, Config):
            yield from input_fields(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def field_values(data, path):
    """The values at a dotted path (`name[]` fans out over a list)."""
    values = [data]
    for part in path.split("."):
        key, many = part.removesuffix("[]"), part.endswith("[]")
        values = [v[key] for v in values]
        if many:
            values = [item for v in values for item in v]
    return values


INPUT_TYPES = sorted({type(inputs) for inputs, _, _ in base_values().values()}, key=lambda t: t.__name__)


@pytest.mark.parametrize("inputs_type", INPUT_TYPES, ids=[t.__name__ for t in INPUT_TYPES])
def test_every_input_field_comes_from_the_config(inputs_type):
    """Each leaf field of the type (besides upstream outputs) changes with some config key in some stage (the
    stages of the type matched in plan order: a changed target renames its search stages)."""
    def of_type(values):
        return [inputs.to_dict() for inputs, _, _ in values.values() if type(inputs) is inputs_type]

    fields = set(input_fields(inputs_type))
    fed = set()
    for path in LEAVES:
        for old, new in zip(of_type(base_values()), of_type(effect(path)[2])):
            fed |= {f for f in fields if field_values(old, f) != field_values(new, f)}
    assert sorted(fields - fed) == []  # a field no config key feeds: dead, or a constant of the code


def test_only_out_progress_workers_and_unused_task_settings_reach_no_fingerprint():
    unread = sorted(".".join(p) for p in LEAVES if not effect(p)[0])
    # sst2 is not fine-tuned; finetune.workers changes how many fine-tunes run at once, not their results
    assert unread == ["finetune.task_configs.sst2.epochs", "finetune.workers", "out", "progress"]


def test_what_the_seed_and_the_downstream_folder_reach():
    assert "seed" in type(base_values()["supernet"][0]).model_fields
    assert {"latency", "predictor", "supernet", "search-200x", "fast-200x", "extract", "further-train",
            "baselines", "finetune"} <= effect(("seed",))[0]
    # the folder of the task data: read by fine-tuning and, with the finetune evaluator only, by the searches and by
    # the choice among the further-trained top k (none to make with top_k 1)
    assert effect(("data", "downstream"))[0] == {"search-200x", "fast-200x", "further-train", "finetune"}
    top1 = BASE.replace(further_train={**BASE.further_train.to_dict(), "top_k": 1})
    moved = stage_values(top1.replace(data={**top1.data.to_dict(), "downstream": "/fp/elsewhere"}))
    assert moved["further-train"][2] == stage_values(top1)["further-train"][2]
    loss = Unchecked.from_dict(base_dict(evaluator="loss"))
    moved = stage_values(loss.replace(data={**loss.data.to_dict(), "downstream": "/fp/elsewhere"}))
    for name, (_, chained, own) in stage_values(loss).items():
        assert (moved[name][1] == chained) == (name not in ("finetune", "report")), name
    # a task's settings reach fine-tuning only when the task is fine-tuned
    assert effect(("finetune", "task_configs", "docpair", "max_eval_examples"))[0] == {"finetune"}
