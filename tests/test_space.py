"""Search spaces: built-ins load, sampling stays inside, bad files fail with one clear line."""

from __future__ import annotations

import random

import pytest

from edgenas.errors import EdgenasError
from edgenas.search.space import SpaceError, load_space
from edgenas.types import ArchConfig

GOOD = """
name: tiny
choices:
  num_hidden_layers: [1, 2]
  hidden_size: [32, 48]
  intra_bottleneck_size: [16, 32]
  num_attention_heads: [1, 2, 4]
  num_feedforward_networks: [1, 2]
  intermediate_size: [24, 32]
  embedding_size: [8, 16]
"""


def write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_builtin_mobilebert_max_is_full_mobilebert() -> None:
    space = load_space("mobilebert")
    assert space.max_arch() == ArchConfig()  # ArchConfig's defaults are google/mobilebert-uncased
    assert space.contains(space.max_arch()) and space.contains(space.min_arch())


def test_builtin_minilm_is_minilm_in_whole_heads() -> None:
    space = load_space("minilm")
    assert space.init == "minilm" and space.layers == "spread"
    assert not space.family.use_bottleneck and space.family.normalization_type == "layer_norm"
    assert space.max_arch().short() == "L6-H384-A12-I1536-E384" and space.head_size == 32
    assert "num_attention_heads" not in space.free_keys and "intra_bottleneck_size" not in space.free_keys
    rng = random.Random(0)
    for _ in range(30):
        arch = space.sample(rng)
        assert space.contains(arch)
        assert arch.num_attention_heads * 32 == arch.hidden_size == arch.intra_bottleneck_size
    assert space.min_arch().short() == "L1-H192-A6-I384-E64"
    assert all(isinstance(v, int) for values in space.choices.values() for v in values)


def test_sample_is_seeded_and_inside(tmp_path) -> None:
    space = load_space(write(tmp_path, GOOD))
    first = [space.sample(random.Random(3)) for _ in range(5)]
    assert first == [space.sample(random.Random(3)) for _ in range(5)]
    rng = random.Random(0)
    for _ in range(50):
        arch = space.sample(rng)
        assert space.contains(arch)
        assert arch.intra_bottleneck_size % arch.num_attention_heads == 0
    assert space.max_arch() == ArchConfig(2, 48, 32, 4, 2, 32, 16)
    assert space.min_arch() == ArchConfig(1, 32, 16, 1, 1, 24, 8)
    assert not space.contains(ArchConfig(3, 48, 32, 4, 2, 32, 16))


def test_content_hash_tracks_choices_not_name(tmp_path) -> None:
    a = load_space(write(tmp_path, GOOD))
    renamed = load_space(write(tmp_path, GOOD.replace("name: tiny", "name: other")))
    changed = load_space(write(tmp_path, GOOD.replace("[24, 32]", "[24, 28]")))
    assert a.content_hash() == renamed.content_hash() != changed.content_hash()
    assert a.to_dict()["choices"]["num_hidden_layers"] == [1, 2]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("  embedding_size", "  embed_size"), "unknown key `embed_size`"),
        (lambda t: t.replace("[24, 32]", "[]"), "choices.intermediate_size must be a non-empty list"),
        (lambda t: t.replace("[1, 2, 4]", "[3]"), "num_attention_heads has 3"),
        (lambda t: t.replace("[8, 16]", "[8, -1]"), "choices.embedding_size must be a positive integer"),
        (lambda t: t.replace("  hidden_size: [32, 48]\n", ""), "choices.hidden_size is missing"),
        (lambda t: t + "colour: red\n", "unknown key `colour`"),
        (lambda t: t + "max: {num_hidden_layers: 2, hidden_size: 40, intra_bottleneck_size: 32,"
         " num_attention_heads: 4, num_feedforward_networks: 2, intermediate_size: 32, embedding_size: 16}\n",
         "choices.hidden_size has 48, larger than max.hidden_size = 40"),
        (lambda t: "[unclosed", "not valid YAML"),
    ],
)
def test_invalid_space_names_file_and_key(tmp_path, edit, message) -> None:
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    text = str(info.value)
    assert isinstance(info.value, EdgenasError)
    assert str(path) in text and message in text and "\n" not in text


def test_unknown_builtin_or_missing_file() -> None:
    with pytest.raises(SpaceError, match="search space not found"):
        load_space("no-such-space")
