"""Arch: parse/format, JSON round trips, validation errors that name the field and the rule."""

import json

import pytest

from autotinybert import BERT_BASE, Arch, ArchError


@pytest.mark.parametrize("text", ["5-564-1054-8-512", "12-768-3072-12-768", "1-128-128-1-64", "4-256-480-12-192"])
def test_string_round_trip(text):
    arch = Arch.parse(text)
    assert str(arch) == text
    assert Arch.parse(str(arch)) == arch


def test_fields_and_head_size():
    arch = Arch.parse("5-564-1054-8-512")
    assert (arch.layers, arch.hidden, arch.ffn, arch.heads, arch.qkv) == (5, 564, 1054, 8, 512)
    assert arch.head_size == 64
    assert str(BERT_BASE) == "12-768-3072-12-768"
    assert Arch.parse(" 5-564-1054-8-512\n") == arch  # surrounding whitespace only


def test_json_round_trip():
    arch = Arch.parse("5-280-512-12-276")
    assert Arch.from_json(arch.to_json()) == arch
    assert json.loads(arch.to_json()) == {"layers": 5, "hidden": 280, "ffn": 512, "heads": 12, "qkv": 276}
    assert Arch.from_dict(arch.to_dict()) == arch


def test_frozen_and_hashable():
    arch = Arch.parse("4-256-1024-4-256")
    with pytest.raises(AttributeError):
        arch.layers = 3
    assert len({arch, Arch.parse("4-256-1024-4-256")}) == 1


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "has 1 field"),
        ("5-564-1054-8", "has 4 field"),
        ("5-564-1054-8-512-1", "has 6 field"),
        ("5-564-x-8-512", "field 'ffn'"),
        ("5--1054-8-512", "field 'hidden'"),
        ("5-564-1054-8-51.2", "field 'qkv'"),
        ("5-5e2-1054-8-512", "field 'hidden'"),
        ("+5-564-1054-8-512", "field 'layers'"),
        ("5-564-1054-0x8-512", "field 'heads'"),
        ("٥-564-1054-8-512", "field 'layers'"),  # Arabic-Indic digit: int() would accept it
        ("5 -564-1054-8-512", "field 'layers'"),
        ("__import__('os')-1-1-1-1", "field 'layers'"),
        ("0-564-1054-8-512", "'layers' must be > 0"),
        ("5-564-1054-0-512", "'heads' must be > 0"),
        ("5-564-1054-7-512", "divisible by 'heads'"),
    ],
)
def test_malformed_strings_name_the_problem(text, fragment):
    with pytest.raises(ArchError, match=None) as info:
        Arch.parse(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize("bad", [1.5, "3", True, None, -1, 0])
def test_constructor_rejects_non_positive_integers(bad):
    with pytest.raises(ArchError, match="'layers'"):
        Arch(bad, 128, 512, 2, 128)


def test_from_dict_requires_exact_keys():
    with pytest.raises(ArchError, match=r"missing keys \['qkv'\]"):
        Arch.from_dict({"layers": 1, "hidden": 2, "ffn": 3, "heads": 1})
    with pytest.raises(ArchError, match=r"unknown keys \['dropout'\]"):
        Arch.from_dict({"layers": 1, "hidden": 2, "ffn": 3, "heads": 1, "qkv": 1, "dropout": 0})
    with pytest.raises(ArchError, match="not valid JSON"):
        Arch.from_json("{layers: 1}")


def test_conventional_rule_and_parameter_count():
    assert Arch.conventional(4, 512) == Arch.parse("4-512-2048-8-512")
    with pytest.raises(ArchError, match="divisible by head_size"):
        Arch.conventional(4, 500)
    # BERT-base encoder + embeddings (no pooler): 108,891,648 parameters is the well-known figure incl. pooler 590,592.
    assert BERT_BASE.num_parameters() + 768 * 768 + 768 == 109_482_240
