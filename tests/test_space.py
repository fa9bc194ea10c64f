"""SearchSpace: exact sizes, presets, YAML/dict spaces, seeded sampling, grid mutation, errors."""

from collections import Counter

import numpy as np
import pytest

from autotinybert import Arch, SearchSpace, SpaceError


def test_paper_sizes_are_exact():
    assert SearchSpace.preset("mlm").size() == 11_391_072
    assert SearchSpace.preset("kd").size() == 47_462_800
    assert str(SearchSpace.preset("mlm").max_arch) == "8-768-3072-12-768"
    assert str(SearchSpace.preset("kd").max_arch) == "8-768-3072-12-768"


@pytest.mark.parametrize("name", SearchSpace.presets())
def test_every_preset_samples_inside_itself_and_round_trips(name):
    space = SearchSpace.preset(name)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(200)]
    assert all(space.contains(a) for a in archs)
    assert space.contains(space.max_arch) and space.contains(space.min_arch)
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert f"{space.size():,}" in space.describe()
    # a brute-force count agrees with size() on the small presets
    if space.size() < 100_000:
        n_attention = space.heads.count if space.attention == "heads" else space.qkv.count
        assert space.size() == len(list(space.layers.values())) * len(list(space.hidden.values())) \
            * len(list(space.ffn.values())) * n_attention


def test_paper_archs_are_in_their_spaces():
    mlm, kd = SearchSpace.preset("mlm"), SearchSpace.preset("kd")
    for text in ["4-396-624-6-384", "4-432-384-4-256", "3-320-608-4-256", "5-432-720-6-384"]:
        assert mlm.contains(Arch.parse(text))
    # Two of the paper's own results are off its Table B.1 grid (step 4): S1's ffn 1054 and S5's hidden 450.
    assert mlm.violations(Arch.parse("5-564-1054-8-512")) == ["ffn=1054 is not in 128..3072 step 4"]
    assert mlm.violations(Arch.parse("5-450-636-6-384")) == ["hidden=450 is not in 128..768 step 4"]
    for text in ["5-564-1024-12-528", "5-324-600-12-324", "5-280-512-12-276", "4-256-480-12-192"]:
        assert kd.contains(Arch.parse(text))


def test_check_lists_every_violation():
    mlm = SearchSpace.preset("mlm")
    with pytest.raises(SpaceError) as info:
        mlm.check(Arch.parse("9-566-1054-8-384"))
    message = str(info.value)
    assert "layers=9" in message and "hidden=566" in message and "head_size*heads" in message
    assert "outside search space 'mlm'" in message


def test_sampling_is_seeded_and_needs_an_explicit_generator():
    space = SearchSpace.preset("kd")
    a = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b
    first = np.random.default_rng(1)
    assert [space.sample(first) for _ in range(5)] != [space.sample(np.random.default_rng(2)) for _ in range(5)]
    for bad in (None, 0, np.random.RandomState(0)):
        with pytest.raises(TypeError, match="numpy.random.Generator"):
            space.sample(bad)


def test_sampling_is_uniform_per_dimension():
    space = SearchSpace.preset("mlm")
    rng = np.random.default_rng(123)
    n = 24_000
    layers = Counter(space.sample(rng).layers for _ in range(n))
    assert sorted(layers) == list(range(1, 9))
    expected = n / 8
    chi2 = sum((count - expected) ** 2 / expected for count in layers.values())
    assert chi2 < 24.3  # chi-square, 7 degrees of freedom, p = 0.001


def test_sample_with_fixed_layers():
    space = SearchSpace.preset("cpu-mlm")
    rng = np.random.default_rng(0)
    assert {space.sample(rng, layers=3).layers for _ in range(20)} == {3}
    with pytest.raises(SpaceError, match="layers=9"):
        space.sample(rng, layers=9)


@pytest.mark.parametrize("name", ["mlm", "kd", "cpu-mlm", "cpu-kd"])
def test_mutation_stays_on_grid_and_inside(name):
    space = SearchSpace.preset(name)
    rng = np.random.default_rng(5)
    # start from the corners too: the max arch has 12 heads (the official code crashed mutating it)
    parents = [space.max_arch, space.min_arch] + [space.sample(rng) for _ in range(50)]
    for parent in parents:
        for _ in range(10):
            child = space.mutate(parent, rng, prob=1.0)
            assert space.contains(child), (parent, child)
            assert abs(child.layers - parent.layers) <= 1


def test_mutation_moves_by_grid_steps():
    space = SearchSpace.preset("mlm")
    rng = np.random.default_rng(0)
    parent = Arch.parse("4-400-1200-6-384")
    moved = [space.mutate(parent, rng, prob=1.0, max_steps=2) for _ in range(200)]
    assert {abs(c.hidden - parent.hidden) for c in moved} <= {0, 4, 8}
    assert {abs(c.heads - parent.heads) for c in moved} == {1, 2}
    assert all(c.qkv == 64 * c.heads for c in moved)
    assert space.mutate(parent, rng, prob=0.0) == parent


def test_neighbours():
    space = SearchSpace.preset("mlm")
    top = space.max_arch
    assert [a.heads for a in space.neighbours(top, "heads")] == [11]
    assert [a.layers for a in space.neighbours(Arch.parse("4-400-1200-6-384"), "layers", 2)] == [2, 3, 5, 6]
    with pytest.raises(SpaceError, match="mutate 'heads' instead"):
        space.neighbours(top, "qkv")
    kd = SearchSpace.preset("kd")
    assert {a.qkv for a in kd.neighbours(Arch.parse("4-256-480-12-192"), "qkv")} == {180, 204}
    assert kd.mutable_dims == ("layers", "hidden", "ffn", "qkv")


def test_custom_space_from_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("attention: dims\nlayers: [1, 2]\nhidden: {min: 16, max: 32, step: 8}\n"
                    "ffn: [32, 64, 32]\nheads: 4\nqkv: {min: 8, max: 32, step: 4}\n")
    space = SearchSpace.load(path)
    assert space.name == "tiny" and space.size() == 2 * 3 * 2 * 7
    assert space.max_arch == Arch(2, 32, 64, 4, 32)


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"attention": "heads", "layers": [1, 2], "hidden": [16, 32, 8], "ffn": [16, 32, 16], "heads": [1, 2]},
         "positive integer head_size"),
        ({"attention": "dims", "layers": [1, 2], "hidden": [16, 32, 8], "ffn": [16, 32, 16], "heads": [1, 4],
          "qkv": [8, 32, 4]}, "keeps the head count fixed"),
        ({"attention": "dims", "layers": [1, 2], "hidden": [16, 32, 8], "ffn": [16, 32, 16], "heads": 4,
          "qkv": [6, 30, 4]}, "divisible by heads=4"),
        ({"attention": "both", "layers": [1, 2], "hidden": [16, 32, 8], "ffn": [16, 32, 16], "heads": 4},
         "attention must be one of"),
        ({"attention": "heads", "layers": [1, 2], "hidden": [16, 30, 8], "ffn": [16, 32, 16], "heads": [1, 2],
          "head_size": 8}, "dimension 'hidden'"),
        ({"attention": "heads", "layers": [3, 2], "hidden": [16, 32, 8], "ffn": [16, 32, 16], "heads": [1, 2],
          "head_size": 8}, "dimension 'layers'"),
        ({"attention": "heads", "layers": [1, 2], "hidden": [16, 32, 8], "ffn": [16, 32, 16], "heads": [1, 2],
          "head_size": 8, "dropout": 0.1}, "unknown search space key(s) ['dropout']"),
        ({"attention": "heads", "hidden": [16, 32, 8], "ffn": [16, 32, 16], "heads": [1, 2], "head_size": 8},
         "missing key(s) ['layers']"),
        ({"attention": "heads", "layers": "1..2", "hidden": [16, 32, 8], "ffn": [16, 32, 16], "heads": [1, 2],
          "head_size": 8}, "dimension 'layers' must be"),
    ],
)
def test_malformed_spaces(data, fragment):
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_dict(data)
    assert fragment in str(info.value)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(SpaceError, match=r"unknown search space preset 'mlm2'.*presets are \['cpu-kd'"):
        SearchSpace.preset("mlm2")
    with pytest.raises(SpaceError, match="does not exist"):
        SearchSpace.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("attention: [heads\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        SearchSpace.load(bad)
