"""`Arch`: one BERT architecture as a frozen, validated value.

The string form is the paper's notation ``L-dm-df-h-dqkv``::

    layers - hidden (d_m = d_o) - ffn (d_f) - heads (h) - qkv (total Q/K/V size)

BERT-base is ``12-768-3072-12-768``. The head size is ``qkv / heads``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from .errors import UserError

FIELDS = ("layers", "hidden", "ffn", "heads", "qkv")
_NOTATION = "L-dm-df-h-dqkv (layers-hidden-ffn-heads-qkv), e.g. 5-564-1054-8-512"


class ArchError(UserError):
    """An architecture string, dict or value that breaks a rule."""


@dataclass(frozen=True, order=True)
class Arch:
    """Architecture hyper-parameters of one BERT (all layers share them, the paper's "ILS")."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    qkv: int

    def __post_init__(self) -> None:
        for name in FIELDS:
            value = getattr(self, name)
            # bool is an int subclass: Arch(True, ...) is a bug, not a 1-layer model.
            if isinstance(value, bool) or not isinstance(value, int):
                raise ArchError(f"Arch field '{name}' must be an integer, got {value!r} ({type(value).__name__})")
            if value <= 0:
                raise ArchError(f"Arch field '{name}' must be > 0, got {value}")
        if self.qkv % self.heads:
            raise ArchError(
                f"Arch field 'qkv' ({self.qkv}) must be divisible by 'heads' ({self.heads}): "
                f"every head gets qkv/heads dimensions"
            )

    @property
    def head_size(self) -> int:
        return self.qkv // self.heads

    def __str__(self) -> str:
        return "-".join(str(getattr(self, name)) for name in FIELDS)

    @classmethod
    def parse(cls, text: str) -> Arch:
        """Parse ``L-dm-df-h-dqkv`` strictly: five positive decimal integers, nothing else."""
        if isinstance(text, Arch):
            return text
        if not isinstance(text, str):
            raise ArchError(f"arch must be a string like {_NOTATION}; got {type(text).__name__}")
        parts = text.strip().split("-")
        if len(parts) != len(FIELDS):
            raise ArchError(f"arch {text!r} has {len(parts)} field(s); expected 5 in the form {_NOTATION}")
        values = {}
        for name, part in zip(FIELDS, parts):
            # isdecimal rejects signs, spaces, '1e3', '0x10' and unicode look-alikes that int() would take.
            if not (part.isascii() and part.isdecimal()):
                raise ArchError(f"arch {text!r}: field '{name}' is {part!r}, not a positive integer ({_NOTATION})")
            values[name] = int(part)
        return cls(**values)

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arch:
        if not isinstance(data, dict):
            raise ArchError(f"arch dict must be a mapping with keys {list(FIELDS)}, got {type(data).__name__}")
        missing = [k for k in FIELDS if k not in data]
        unknown = sorted(set(data) - set(FIELDS))
        if missing or unknown:
            raise ArchError(f"arch dict has missing keys {missing} / unknown keys {unknown}; expected exactly {list(FIELDS)}")
        return cls(**{k: data[k] for k in FIELDS})

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ArchError(f"arch JSON is not valid JSON: {err}") from None
        return cls.from_dict(data)

    def replace(self, **changes: int) -> Arch:
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise ArchError(f"unknown Arch field(s) {unknown}; fields are {list(FIELDS)}")
        return Arch(**{**self.to_dict(), **changes})

    @classmethod
    def conventional(cls, layers: int, hidden: int, head_size: int = 64) -> Arch:
        """BERT's rule: ffn = 4 * hidden, qkv = hidden, heads = hidden / head_size."""
        if hidden % head_size:
            raise ArchError(f"conventional arch needs hidden ({hidden}) divisible by head_size ({head_size})")
        return cls(layers, hidden, 4 * hidden, hidden // head_size, hidden)

    def num_parameters(self, vocab_size: int = 30522, max_positions: int = 512, type_vocab: int = 2) -> int:
        """Encoder + embedding parameters (no pooler, no task head)."""
        h, f, q = self.hidden, self.ffn, self.qkv
        embeddings = (vocab_size + max_positions + type_vocab) * h + 2 * h
        per_layer = 3 * (h * q + q) + (q * h + h) + 2 * h + (h * f + f) + (f * h + h) + 2 * h
        return embeddings + self.layers * per_layer


assert [f.name for f in fields(Arch)] == list(FIELDS)

BERT_BASE = Arch(12, 768, 3072, 12, 768)
