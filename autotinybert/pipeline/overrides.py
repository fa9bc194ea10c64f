"""``key.sub=value`` command-line overrides for nested YAML configs."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from ..errors import UserError


class ConfigError(UserError):
    """A config key or value that the pipeline cannot use."""


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value (e.g. search.population=10)")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"override {text!r} has an empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {err}") from None
    return path, value


def apply_overrides(config: dict[str, Any], overrides: list[str], allowed: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `config` with `overrides` applied; every key must exist in `allowed` (the full defaults)."""
    out = copy.deepcopy(config)
    for text in overrides:
        path, value = parse_override(text)
        node, schema = out, allowed
        for i, part in enumerate(path):
            if not isinstance(schema, dict) or part not in schema:
                where = ".".join(path[:i]) or "the top level"
                known = sorted(schema) if isinstance(schema, dict) else []
                raise ConfigError(f"override {text!r}: unknown key {'.'.join(path[:i + 1])!r} "
                                  f"(keys at {where}: {known})")
            if i == len(path) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"override {text!r}: {'.'.join(path[:i + 1])!r} is not a section")
                schema = schema[part]
    return out
