"""One typed config base for every component, command and pipeline section.

Why pydantic (v2) rather than dataclasses: validation from the field types and their constraints
(``Field(gt=0)``, ``Literal[...]``) replaces the hand-written checks each config carried; models nest, are
frozen (hashable inputs for stage fingerprints) and dump to JSON exactly as they load. Field docs are the
attribute docstrings (``use_attribute_docstrings``), so `--help` is generated from the same text a reader sees.

    cfg = TrainSupernetConfig.load("train.yaml", ["learning_rate=1e-4", "out=runs/x"])
    cfg = PipelineConfig.load("configs/cpu-mlm.yaml", ["supernet.space.layers.max=3"])

Rules shared by every config:

* from YAML (`load`), a dict (`from_dict`) and ``key.sub=value`` overrides (values parsed as YAML), in that order;
* unknown keys are refused with the closest valid name suggested;
* paths written in a YAML file are relative to that file's folder (fields declared with `path_field`); paths
  given on the command line or in a dict are taken as given, relative to the current directory;
* `to_dict` is the resolved config every run writes beside its outputs; `fingerprint` hashes it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .errors import UserError

__all__ = ["Config", "ConfigError", "Field", "NameList", "PathList", "PathStr", "path_field", "positional_field", "parse_override",
           "field_docs"]


def _path_to_str(value: Any) -> Any:
    import os

    return os.fspath(value) if isinstance(value, os.PathLike) else value


PathStr = typing.Annotated[str, BeforeValidator(_path_to_str)]
"""A path kept as a string (JSON-able); a `pathlib.Path` is accepted."""


def _split_names(value: Any) -> Any:
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


def _one_or_many(value: Any) -> Any:
    import os

    return [value] if isinstance(value, (str, os.PathLike)) else value


PathList = typing.Annotated[list[PathStr], BeforeValidator(_one_or_many)]
"""A list of paths; a single path is accepted as a list of one."""

NameList = typing.Annotated[list[str], BeforeValidator(_split_names)]
"""A list of names; ``"sst2,mrpc"`` (a comma-separated string, as typed on a command line) is accepted."""


class ConfigError(UserError):
    """A config key or value that cannot be used."""


# Field markers, read from `json_schema_extra`:
#   path: "always"    -- a file/folder path, resolved against the config file's folder (or the cwd);
#         "if_exists" -- a path or a hub/preset name: resolved only when such a path exists;
#   positional: True  -- on the command line, given without its key (e.g. `autotinybert space mlm`);
#   expand: "module:function" -- a string value (a preset name) that nested overrides expand into a mapping.
def path_field(default: Any = None, *, names: bool = False, positional: bool = False, **kwargs: Any) -> Any:
    extra = {"path": "if_exists" if names else "always"}
    if positional:
        extra["positional"] = True
    if "default_factory" in kwargs:
        return Field(json_schema_extra=extra, **kwargs)
    return Field(default, json_schema_extra=extra, **kwargs)


def positional_field(default: Any = None, **kwargs: Any) -> Any:
    if "default_factory" in kwargs:
        return Field(json_schema_extra={"positional": True}, **kwargs)
    return Field(default, json_schema_extra={"positional": True}, **kwargs)


def _extra(field) -> dict[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


class Config(BaseModel):
    """Base of every config: frozen, unknown keys forbidden, documented by attribute docstrings."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, validate_default=True,
                              protected_namespaces=())

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:  # `TrainConfig(batch_size=0)` fails like `from_dict` does
            raise ConfigError(describe_errors(type(self), err)) from None

    __init__.__pydantic_base_init__ = True  # nested sections are validated by pydantic, not through this __init__

    # ------------------------------------------------------------------ building
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = ()):
        """Validate a mapping (then apply ``key=value`` overrides); every problem is a `ConfigError`."""
        if data is None:
            data = {}
        if type(data) is cls and not overrides:
            return data
        if isinstance(data, Config):
            data = data.to_dict()
        if not isinstance(data, dict):
            raise ConfigError(f"a {cls.__name__} must be a mapping of keys to values, got {type(data).__name__}")
        return cls.validate_data(apply_overrides(cls, data, overrides))

    @classmethod
    def load(cls, source: str | Path | dict[str, Any] | Config | None = None,
             overrides: list[str] | tuple[str, ...] = (), values: dict[str, Any] | None = None):
        """A YAML file, a dict, an instance or None (defaults), then `values` (top-level keys, e.g. a command's
        positional arguments), then ``key.sub=value`` overrides.

        Paths inside a YAML file are resolved against its folder; `values` and overrides are taken as given
        (relative paths stay relative to the current directory)."""
        if source is None or isinstance(source, (dict, Config)):
            if not values:
                return cls.from_dict(source, overrides)
            data = source.to_dict() if isinstance(source, Config) else dict(source or {})
        else:
            data = cls._read_yaml(Path(source))
        data.update(values or {})
        return cls.from_dict(data, overrides)

    @classmethod
    def _read_yaml(cls, path: Path) -> dict[str, Any]:
        """A YAML file's mapping, its path fields resolved against the file's folder."""
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist" if not path.exists()
                              else f"config file {path} is a folder; give a YAML file")
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}")
        return resolve_paths(cls, data, path.resolve().parent)

    @classmethod
    def validate_data(cls, data: dict[str, Any]):
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(describe_errors(cls, err)) from None

    def replace(self, **changes: Any):
        """A validated copy with `changes` applied (``None`` values are kept: use it to unset)."""
        return type(self).validate_data({**self.to_dict(), **changes})

    # ------------------------------------------------------------------ reading
    def to_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-able data (what runs write beside their outputs)."""
        return self.model_dump(mode="json")

    def fingerprint(self, exclude: frozenset[str] | set[str] = frozenset()) -> str:
        data = {k: v for k, v in self.to_dict().items() if k not in exclude}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        from .io import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def positional_keys(cls) -> list[str]:
        return [name for name, f in cls.model_fields.items() if _extra(f).get("positional")]


# ---------------------------------------------------------------------- types of fields
def _strip_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    if origin is typing.Annotated:
        return _strip_optional(typing.get_args(annotation)[0])
    return annotation


def _config_class(annotation: Any) -> type[Config] | None:
    inner = _strip_optional(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, Config) else None


def _mapping_value(annotation: Any) -> tuple[bool, Any]:
    """(is a ``dict[str, X]``, X)."""
    inner = _strip_optional(annotation)
    if typing.get_origin(inner) is dict:
        args = typing.get_args(inner)
        return True, args[1] if len(args) == 2 else Any
    return False, None


def type_name(annotation: Any) -> str:
    """A short readable type for --help: ``int``, ``float | null``, ``list[str]``, ``mlm | kd``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in typing.get_args(annotation))
    if origin in (list, tuple, dict):
        args = ", ".join(type_name(a) for a in typing.get_args(annotation) if a is not Ellipsis)
        return f"{origin.__name__}[{args}]"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def field_docs(cls: type[Config], prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, doc) for every key of `cls`, nested sections flattened as ``section.key``."""
    rows = []
    for name, f in cls.model_fields.items():
        sub = _config_class(f.annotation)
        default = f.get_default(call_default_factory=True)
        if sub is not None and isinstance(default, Config):
            rows.append((f"{prefix}{name}", "section", None, (f.description or "").strip()))
            rows.extend(_nested_docs(sub, default, f"{prefix}{name}."))
            continue
        if isinstance(default, Config):
            default = default.to_dict()
        rows.append((f"{prefix}{name}", type_name(f.annotation), default, (f.description or "").strip()))
    return rows


def _nested_docs(cls: type[Config], instance: Config, prefix: str) -> list[tuple[str, str, Any, str]]:
    rows = []
    for key, kind, default, doc in field_docs(cls, prefix):
        short = key[len(prefix):]
        if "." not in short and short in type(instance).model_fields and kind != "section":
            value = getattr(instance, short)
            default = value.to_dict() if isinstance(value, Config) else value
        rows.append((key, kind, default, doc))
    return rows


# ---------------------------------------------------------------------- errors
# Names changed when the configs became one system (one name per concept): suggested, not accepted.
RENAMED = {"lr": "learning_rate", "adam_eps": "adam_epsilon", "warmup_proportion": "warmup_ratio",
           "json": "as_json"}


def _suggest(word: str, choices: list[str]) -> str:
    if RENAMED.get(word) in choices:
        return f"; did you mean {RENAMED[word]!r}? (renamed)"
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _model_at(cls: type[Config], loc: tuple) -> type[Config] | None:
    """The config class that holds the key at `loc` (a pydantic error location)."""
    current: Any = cls
    for part in loc:
        if current is None:
            return None
        if isinstance(current, type) and issubclass(current, Config):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        else:
            is_map, value = _mapping_value(current)
            current = value if is_map else None
        sub = _config_class(current) if current is not None else None
        current = sub if sub is not None else current
    return current if isinstance(current, type) and issubclass(current, Config) else None


def describe_errors(cls: type[Config], err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not isinstance(p, str) or not p.startswith(("function-", "list[")))
        key = ".".join(str(p) for p in loc) or "(config)"
        if e["type"] == "extra_forbidden":
            owner = _model_at(cls, loc[:-1]) or cls
            known = list(owner.model_fields)
            lines.append(f"unknown key {key!r}{_suggest(str(loc[-1]), known)} (keys here: {', '.join(known)})")
        elif e["type"] in ("value_error", "assertion_error"):
            msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            owner = _model_at(cls, loc)  # a section's own check that names one of its keys: "search.fast adds ..."
            first = msg.split(" ", 1)[0].split(".", 1)[0].rstrip(":")
            if owner is not None and loc and first in owner.model_fields:
                lines.append(f"{key}.{msg}")
            else:
                lines.append(f"{key}: {msg}" if loc else msg)
        else:
            lines.append(f"{key}: {e['msg'].lower()}, got {e.get('input')!r}")
    return "; ".join(lines)


# ---------------------------------------------------------------------- overrides and paths
def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML: numbers, true/false, null, [lists])."""
    import yaml

    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ConfigError(f"setting {text!r} must look like key=value or section.key=value (e.g. seed=1)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"setting {text!r}: the value is not valid YAML: {err}") from None
    return path, value


def is_override(token: str) -> bool:
    key, sep, _ = token.partition("=")
    return bool(sep) and bool(key) and all(part.replace("_", "a").replace("-", "a").isalnum()
                                           for part in key.split("."))


def apply_overrides(cls: type[Config], data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of `data` with every ``key.sub=value`` set; keys are checked against `cls` as they are walked."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node, owner = out, cls
        for i, part in enumerate(path):
            where = ".".join(path[:i]) or "the top level"
            field = owner.model_fields.get(part) if owner is not None else None
            if owner is not None and field is None:
                known = list(owner.model_fields)
                raise ConfigError(f"unknown key {'.'.join(path[:i + 1])!r}{_suggest(part, known)} "
                                  f"(keys at {where}: {', '.join(known)})")
            last = i == len(path) - 1
            if last:
                node[part] = value
                break
            child = node.get(part)
            if child is None:  # a section left at its default (or a new mapping entry): start from it
                default = field.get_default(call_default_factory=True) if field is not None else None
                child = default.to_dict() if isinstance(default, Config) else default
                child = {} if child is None else child
            if isinstance(child, str) and field is not None and _extra(field).get("expand"):
                child = _call(_extra(field)["expand"], child)  # e.g. a space preset name -> its mapping
            if not isinstance(child, dict):
                raise ConfigError(f"setting {text!r}: {'.'.join(path[:i + 1])!r} is a value, not a section")
            node[part] = child
            node = child
            sub = _config_class(field.annotation) if field is not None else None
            if sub is not None:
                owner = sub
            else:  # a mapping (task name -> settings, a space's dimensions): any key, checked on validation
                is_map, value_type = _mapping_value(field.annotation) if field is not None else (False, None)
                owner = _config_class(value_type) if is_map else None
    return out


def resolve_paths(cls: type[Config], data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Resolve the path fields of `data` (as read from a file in `base`) against `base`, in nested sections too."""
    out = dict(data)
    for name, value in data.items():
        field = cls.model_fields.get(name)
        if field is None:
            continue
        sub = _config_class(field.annotation)
        if sub is not None and isinstance(value, dict):
            out[name] = resolve_paths(sub, value, base)
        else:
            out[name] = _resolve_value(field, value, base)
    return out


def _resolve_value(field, value: Any, base: Path) -> Any:
    kind = _extra(field).get("path")
    if kind is None:
        return value

    def one(v: Any) -> Any:
        if not isinstance(v, str) or not v:
            return v
        p = Path(v).expanduser()
        if p.is_absolute():
            return str(p)
        if kind == "if_exists" and not (base / p).exists():
            return v  # a hub name or a preset, not a path
        return str((base / p).resolve())

    return [one(v) for v in value] if isinstance(value, list) else one(value)


def _call(spec: str, value: Any) -> Any:
    import importlib

    module, _, attr = spec.partition(":")
    fn: Callable[[Any], Any] = getattr(importlib.import_module(module), attr)
    return fn(value)
