"""The pipeline config: one YAML file (plus ``key.sub=value`` overrides), checked in full before any stage starts.

Sections and what they feed:

* top level  -- ``out`` (run folder), ``seed``, ``progress``;
* ``data``   -- corpus files/folders, tokenizer (None: WordPiece trained on the corpus), downstream data folder;
* ``supernet`` / ``further_train`` -- any `TrainSupernetConfig` / `TrainModelConfig` key except the ones the
  pipeline sets itself (out, corpus, tokenizer, model, cache, seed, resume, overwrite);
* ``latency`` / ``predictor`` -- the latency campaign and the predictor fit;
* ``search`` -- ``speedups`` (one search per target), ``fast`` (also run the fast-rule search per target) + any
  `SearchConfig` key the pipeline does not set;
* ``finetune`` -- ``tasks`` + ``config`` (any `FinetuneConfig` key) + ``task_configs`` (per-task overrides of it).

Relative paths in a config file are resolved against the file's folder.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .. import demo as _demo  # noqa: F401  (registers the demo's docpair task)
from ..errors import UserError
from .overrides import ConfigError, apply_overrides

# keys of the stage configs the pipeline fills in itself (a user value would be overwritten, so it is refused)
_TRAIN_OWNED = {"out", "corpus", "tokenizer", "tokenizer_vocab_size", "max_seq_length", "cache_dir", "seed",
                "resume", "overwrite", "model", "progress", "val_fraction", "val_max_sequences"}
_SEARCH_OWNED = {"supernet", "predictor", "speedup", "latency_ms", "out", "resume", "overwrite", "progress",
                 "seed", "data", "tokenizer", "space"}

DEFAULTS: dict[str, Any] = {
    "out": "runs/pipeline",
    "seed": 0,
    "progress": True,
    "data": {
        "corpus": [],
        "tokenizer": None,
        "tokenizer_vocab_size": 8000,
        "max_seq_length": 128,
        "val_fraction": 0.01,
        "val_max_sequences": 2000,
        "cache_dir": None,          # None: RUN_DIR/cache
        "downstream": None,         # folder holding the task folders (SST-2/, MRPC/, docpair/ ...)
    },
    "supernet": {"space": "cpu-mlm", "max_steps": 1000},
    "latency": {
        "archs": 100,               # archs sampled from the space (the conventional candidates come on top)
        "warmup": 2, "repeats": 7, "threads": 1, "batch": 1, "seq_len": 128,
        "backend": "torch", "device": "cpu", "clock": "wall",
        "baseline_head_size": 64,   # BERT's rule: heads = hidden / 64
        "chunk": 50,                # archs built and timed together (with BERT-base) per round; bounds memory
    },
    "predictor": {"kind": "auto", "folds": 5},
    "search": {"speedups": [4, 10], "method": "evolved", "evaluator": "loss", "generations": 4, "population": 25,
               "fast": False},      # fast: also run the paper's fast-rule search (section 4.4) per target
    "further_train": {"max_steps": 500},
    "finetune": {"tasks": ["sst2"], "config": {}, "task_configs": {}},  # task_configs: {task: {key: value}}
}

_KNOWN_SECTION_KEYS = {
    "data": set(DEFAULTS["data"]),
    "latency": set(DEFAULTS["latency"]),
    "predictor": set(DEFAULTS["predictor"]),
    "finetune": set(DEFAULTS["finetune"]),
}


def _dataclass_keys(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def _schema() -> dict[str, Any]:
    """Every key a config may hold (the override validator walks it)."""
    from ..downstream.config import FinetuneConfig
    from ..search.runner import SearchConfig
    from ..train.config import TrainModelConfig, TrainSupernetConfig

    schema: dict[str, Any] = {k: None for k in ("out", "seed", "progress")}
    for section, keys in _KNOWN_SECTION_KEYS.items():
        schema[section] = {k: None for k in keys}
    schema["finetune"]["config"] = {k: None for k in _dataclass_keys(FinetuneConfig)}
    schema["finetune"]["task_configs"] = None  # keyed by task name: checked in `validate`
    schema["supernet"] = {k: None for k in _dataclass_keys(TrainSupernetConfig) - _TRAIN_OWNED}
    schema["further_train"] = {k: None for k in _dataclass_keys(TrainModelConfig) - _TRAIN_OWNED}
    schema["search"] = {k: None for k in (_dataclass_keys(SearchConfig) - _SEARCH_OWNED) | {"speedups", "fast"}}
    return schema


@dataclass
class PipelineConfig:
    """A validated pipeline config: `raw` is the resolved nested dict (what the run folder stores)."""

    raw: dict[str, Any]

    @property
    def out(self) -> Path:
        return Path(self.raw["out"])

    @property
    def seed(self) -> int:
        return self.raw["seed"]

    def section(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.raw[name])

    @classmethod
    def load(cls, source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
        """A YAML path or a dict, then ``key.sub=value`` overrides; every problem is a `ConfigError`."""
        base_dir = Path.cwd()
        if isinstance(source, dict):
            data = copy.deepcopy(source)
        else:
            path = Path(source)
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist")
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
            base_dir = path.resolve().parent
        if not isinstance(data, dict):
            raise ConfigError("a pipeline config must be a mapping of sections (data, supernet, latency, ...)")
        schema = _schema()
        _check_keys(data, schema)
        data = apply_overrides(data, list(overrides), schema)
        merged = _merge(DEFAULTS, data)
        _resolve_paths(merged, base_dir)
        config = cls(merged)
        config.validate()
        return config

    def validate(self) -> None:
        """Check every value by building each stage's own config; errors name the pipeline key."""
        from ..downstream.config import FinetuneConfig
        from ..downstream.tasks import parse_tasks
        from ..search.runner import SearchConfig
        from ..space import SearchSpace
        from ..train.config import TrainModelConfig, TrainSupernetConfig

        r = self.raw
        if not isinstance(r["seed"], int) or isinstance(r["seed"], bool) or r["seed"] < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {r['seed']!r}")
        if not isinstance(r["out"], str) or not r["out"]:
            raise ConfigError(f"out must be a folder path, got {r['out']!r}")
        d = r["data"]
        corpus = d["corpus"] if isinstance(d["corpus"], list) else [d["corpus"]]
        if not corpus or not all(isinstance(c, str) and c for c in corpus):
            raise ConfigError(f"data.corpus must be a file/folder path or a list of them, got {d['corpus']!r}")
        missing = [c for c in corpus if not Path(c).exists()]
        if missing:
            raise ConfigError(f"data.corpus: {missing} do not exist")
        d["corpus"] = corpus
        for key in ("tokenizer_vocab_size", "max_seq_length", "val_max_sequences"):
            _positive_int(f"data.{key}", d[key])
        for key, value in (("data.tokenizer", d["tokenizer"]), ("supernet.teacher", r["supernet"].get("teacher")),
                           ("further_train.teacher", r["further_train"].get("teacher"))):
            if isinstance(value, str) and value.startswith(("/", ".", "~")) and not Path(value).expanduser().exists():
                raise ConfigError(f"{key}: folder {value} does not exist")
        if d["downstream"] is None or not Path(d["downstream"]).is_dir():
            raise ConfigError(f"data.downstream must be the folder holding the task folders; got {d['downstream']!r}")

        train_common = {"out": "x", "corpus": corpus, "seed": r["seed"]}
        for section, cls in (("supernet", TrainSupernetConfig), ("further_train", TrainModelConfig)):
            try:
                cfg = cls.from_dict({**train_common, **r[section], **({"model": "x"} if section == "further_train"
                                                                       else {})})
                cfg.validate()
            except UserError as err:
                raise ConfigError(f"{section}: {err}") from None
        try:
            space = SearchSpace.load(r["supernet"].get("space", "cpu-mlm"))
        except UserError as err:
            raise ConfigError(f"supernet.space: {err}") from None

        lat = r["latency"]
        for key in ("archs", "repeats", "threads", "batch", "seq_len", "baseline_head_size", "chunk"):
            _positive_int(f"latency.{key}", lat[key])
        if not isinstance(lat["warmup"], int) or isinstance(lat["warmup"], bool) or lat["warmup"] < 0:
            raise ConfigError(f"latency.warmup must be an integer >= 0, got {lat['warmup']!r}")
        for key, allowed in (("backend", ("torch", "onnxruntime")), ("clock", ("wall", "cpu"))):
            if lat[key] not in allowed:
                raise ConfigError(f"latency.{key} must be one of {list(allowed)}, got {lat[key]!r}")
        pred = r["predictor"]
        if pred["kind"] not in ("auto", "analytic", "mlp"):
            raise ConfigError(f"predictor.kind must be auto, analytic or mlp, got {pred['kind']!r}")
        _positive_int("predictor.folds", pred["folds"])
        from ..latency.predictor import AnalyticModel

        need = max(2 * AnalyticModel.min_points(), pred["folds"])
        if lat["archs"] < need:
            raise ConfigError(f"latency.archs must be at least {need} to fit the predictor with "
                              f"{pred['folds']}-fold cross-validation, got {lat['archs']}")

        s = dict(r["search"])
        speedups = s.pop("speedups")
        fast = s.pop("fast")
        if not isinstance(fast, bool):
            raise ConfigError(f"search.fast must be true or false, got {fast!r}")
        if not isinstance(speedups, list) or not speedups or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x > 1 for x in speedups):
            raise ConfigError(f"search.speedups must be a non-empty list of numbers > 1, got {speedups!r}")
        if len(set(speedups)) != len(speedups):
            raise ConfigError(f"search.speedups has duplicates: {speedups}")
        try:
            SearchConfig.from_dict({**s, "supernet": "x", "predictor": "x", "speedup": speedups[0],
                                    "data": d["downstream"]})
        except UserError as err:
            raise ConfigError(f"search: {err}") from None
        if fast and s.get("method") == "fast":
            raise ConfigError("search.fast adds a fast-rule search beside search.method, which is already 'fast'; "
                              "set search.fast to false or search.method to evolved")
        if fast:
            from ..search.sampling import fast_rule_hidden_sizes

            if not fast_rule_hidden_sizes(space):
                raise ConfigError("search.fast: no arch of supernet.space satisfies the fast rule (1.6 hidden <= "
                                  "ffn <= 1.9 hidden, 0.7 hidden <= qkv <= hidden) on its grid; set search.fast "
                                  "to false or give the space a finer ffn/qkv grid")

        ft = r["finetune"]
        try:
            tasks = parse_tasks(ft["tasks"])
        except UserError as err:
            raise ConfigError(f"finetune.tasks: {err}") from None
        from ..downstream.data import task_folder

        for spec in tasks:
            try:
                task_folder(spec, d["downstream"])
            except UserError as err:
                raise ConfigError(f"finetune.tasks: task {spec.name!r}: {err} (data.downstream)") from None
        try:
            FinetuneConfig.from_dict(ft["config"])
        except UserError as err:
            raise ConfigError(f"finetune.config: {err}") from None
        per_task = ft["task_configs"]
        if not isinstance(per_task, dict):
            raise ConfigError(f"finetune.task_configs must map task names to settings, got {per_task!r}")
        for name, settings in per_task.items():
            try:  # a known task left out of finetune.tasks is fine (its settings wait unused); a typo is not
                parse_tasks([str(name)])
            except UserError as err:
                raise ConfigError(f"finetune.task_configs names an unknown task: {err}") from None
            if not isinstance(settings, dict):
                raise ConfigError(f"finetune.task_configs.{name} must be a mapping of settings, got {settings!r}")
            try:
                FinetuneConfig.from_dict({**ft["config"], **settings})
            except UserError as err:
                raise ConfigError(f"finetune.task_configs.{name}: {err}") from None


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")


def _check_keys(data: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> None:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in schema:
            raise ConfigError(f"unknown config key {name!r}; known keys{' in ' + prefix[:-1] if prefix else ''}: "
                              f"{sorted(schema)}")
        if isinstance(schema[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {name!r} must be a section (a mapping), got {value!r}")
            _check_keys(value, schema[key], name + ".")


def _merge(defaults: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(defaults)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_paths(config: dict[str, Any], base: Path) -> None:
    """Make file paths absolute, relative to the config file's folder."""
    def resolve(value):
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str((base / value).resolve())
        return value

    config["out"] = resolve(config["out"])
    d = config["data"]
    d["corpus"] = [resolve(c) for c in d["corpus"]] if isinstance(d["corpus"], list) else resolve(d["corpus"])
    for key in ("downstream", "cache_dir"):
        d[key] = resolve(d[key])
    tok = d["tokenizer"]
    if isinstance(tok, str) and (base / tok).exists():
        d["tokenizer"] = resolve(tok)
    for section in ("supernet", "further_train"):
        teacher = config[section].get("teacher")
        if isinstance(teacher, str) and (base / teacher).exists():
            config[section]["teacher"] = resolve(teacher)
    space = config["supernet"].get("space")
    if isinstance(space, str) and space.endswith((".yaml", ".yml")):
        config["supernet"]["space"] = resolve(space)
