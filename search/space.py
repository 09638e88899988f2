"""Search spaces: the allowed values of each MobileBERT knob, declared in YAML.

A space file has `choices` (a non-empty list of positive ints per knob of
edgenas.types.ARCH_KEYS), an optional `max` (the supernet's size; default: the
largest choice of each knob), an optional `family` (the fixed MobileBertConfig
switches, edgenas.types.Family; default: MobileBERT's own), an optional `init`
(the pretrained weights the supernet starts from: "minilm", a local checkpoint
directory or a hub id) and an optional `layers` (which layers a shallower
sub-config keeps: "first" k, or "spread" over the stack).

Rules checked on load:

- no unknown keys, no missing keys, no empty or duplicate choice lists;
- no choice larger than `max` (every sub-config must be a slice of the supernet);
- with a bottleneck, every `num_attention_heads` choice divides every
  `intra_bottleneck_size` choice and the max bottleneck, so any combination has
  whole heads;
- without a bottleneck (a BERT-style family), the attention width is the hidden
  size and heads are whole `head_size`-wide slices (head_size = max hidden / max
  heads): `intra_bottleneck_size` and `num_attention_heads` follow from
  `hidden_size` and are not listed among the choices.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from edgenas.errors import EdgenasError
from edgenas.types import ARCH_KEYS, ArchConfig, Family

BUILTIN_SPACES = ("minilm", "mobilebert")
LAYER_SELECTIONS = ("first", "spread")
#: knobs that follow from hidden_size when a family has no bottleneck
TIED_KEYS = ("intra_bottleneck_size", "num_attention_heads")


class SpaceError(EdgenasError):
    """An invalid search-space file: the message names the file and the key."""


@dataclass(frozen=True)
class SearchSpace:
    """Allowed values per architecture knob, the supernet (max) config and the fixed family."""

    choices: dict[str, tuple[int, ...]]
    max: ArchConfig
    name: str = "custom"
    family: Family = Family()
    init: str | None = None
    layers: str = "first"

    @classmethod
    def point(cls, arch: ArchConfig, name: str = "point", family: Family = Family()) -> "SearchSpace":
        """A one-architecture space (stand-alone training of one subnet)."""
        return cls(choices={key: (value,) for key, value in arch.to_dict().items()}, max=arch, name=name,
                   family=family)

    @property
    def head_size(self) -> int:
        """Width of one attention head at the max config."""
        width = self.max.intra_bottleneck_size if self.family.use_bottleneck else self.max.hidden_size
        return width // self.max.num_attention_heads

    @property
    def free_keys(self) -> tuple[str, ...]:
        """The knobs a sampler picks; the others follow from them."""
        if self.family.use_bottleneck:
            return ARCH_KEYS
        return tuple(key for key in ARCH_KEYS if key not in TIED_KEYS)

    def arch(self, values: dict[str, int]) -> ArchConfig:
        """The sub-config of the free knobs in `values`, tied knobs derived."""
        knobs = {key: int(values[key]) for key in self.free_keys}
        if not self.family.use_bottleneck:
            knobs["intra_bottleneck_size"] = knobs["hidden_size"]
            knobs["num_attention_heads"] = knobs["hidden_size"] // self.head_size
        return ArchConfig(**knobs)

    def max_arch(self) -> ArchConfig:
        """The supernet's config (every sub-config is a slice of it)."""
        return self.max

    def min_arch(self) -> ArchConfig:
        """The smallest choice of every knob."""
        return self.arch({key: min(values) for key, values in self.choices.items()})

    def sample(self, rng: random.Random) -> ArchConfig:
        """A uniformly random sub-config."""
        return self.arch({key: rng.choice(self.choices[key]) for key in self.free_keys})

    def contains(self, arch: ArchConfig) -> bool:
        """Whether every knob of `arch` is allowed (tied knobs consistent with the free ones)."""
        return all(getattr(arch, key) in self.choices[key] for key in self.free_keys) and arch == self.arch(
            arch.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family.to_dict(),
            "init": self.init,
            "layers": self.layers,
            "max": self.max.to_dict(),
            "choices": {key: list(self.choices[key]) for key in self.free_keys},
        }

    def content_hash(self) -> str:
        """Hash of everything but the name."""
        body = {key: value for key, value in self.to_dict().items() if key != "name"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A built-in space (minilm, demo, mobilebert) or a YAML file; SpaceError if invalid."""
    if str(name_or_path) in BUILTIN_SPACES:
        resource = resources.files("edgenas.search").joinpath(f"spaces/{name_or_path}.yaml")
        return parse_space(resource.read_text(), source=f"{name_or_path} (built-in)")
    path = Path(name_or_path)
    if not path.is_file():
        raise SpaceError(
            f"{path}: search space not found (built-in spaces: {', '.join(BUILTIN_SPACES)}, or a YAML path)"
        )
    return parse_space(path.read_text(), source=str(path), default_name=path.stem)


def parse_space(text: str, source: str = "<string>", default_name: str = "custom") -> SearchSpace:
    """Parse and validate the YAML text of a space; `source` names it in errors."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpaceError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return space_from_mapping(doc, source, default_name)


def space_from_mapping(doc: Any, source: str = "<mapping>", default_name: str = "custom") -> SearchSpace:
    """Validate an already-parsed space (a YAML document, or SearchSpace.to_dict() read back)."""
    if not isinstance(doc, dict):
        raise SpaceError(f"{source}: expected a mapping with `choices` (and optional `max`, `family`, `init`, `name`)")
    _reject_unknown(doc, ("name", "family", "init", "layers", "max", "choices"), source, "top level")
    family = _family(doc.get("family"), source)
    keys = ARCH_KEYS if family.use_bottleneck else tuple(k for k in ARCH_KEYS if k not in TIED_KEYS)
    raw_choices = doc.get("choices")
    if not isinstance(raw_choices, dict):
        raise SpaceError(f"{source}: `choices` must map each of {', '.join(keys)} to a list of ints")
    choices = {key: _choice_list(raw_choices, key, source) for key in _checked_keys(raw_choices, keys, source, "choices")}
    largest = {key: max(values) for key, values in choices.items()}
    max_values = _max_values(doc.get("max"), largest, keys, source)
    for key in keys:
        if largest[key] > max_values[key]:
            raise SpaceError(f"{source}: choices.{key} has {largest[key]}, larger than max.{key} = {max_values[key]}")
    if family.use_bottleneck:
        _check_heads(choices, max_values, source)
    else:
        _tie_to_heads(choices, max_values, source)
    layers = doc.get("layers", "first")
    if layers not in LAYER_SELECTIONS:
        raise SpaceError(f"{source}: layers must be one of {', '.join(LAYER_SELECTIONS)}, got {layers!r}")
    init = doc.get("init")
    if init is not None and not isinstance(init, str):
        raise SpaceError(f"{source}: init must be 'minilm', a checkpoint directory or a hub id, got {init!r}")
    return SearchSpace(choices=choices, max=ArchConfig(**max_values), name=str(doc.get("name", default_name)),
                       family=family, init=init, layers=layers)


def _family(raw: Any, source: str) -> Family:
    if raw is None:
        return Family()
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: `family` must map MobileBertConfig switches to values")
    allowed = tuple(f.name for f in fields(Family))
    _reject_unknown(raw, allowed, source, "family")
    allowed_values = {"normalization_type": ("no_norm", "layer_norm"), "hidden_act": ("relu", "gelu")}
    for key, value in raw.items():
        if key in allowed_values and value not in allowed_values[key]:
            raise SpaceError(f"{source}: family.{key} must be one of {', '.join(allowed_values[key])}, got {value!r}")
        if key == "layer_norm_eps":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise SpaceError(f"{source}: family.layer_norm_eps must be a positive number, got {value!r}")
            continue
        expected = str if key in allowed_values else bool
        if not isinstance(value, expected):
            raise SpaceError(f"{source}: family.{key} must be a {expected.__name__}, got {value!r}")
    return Family(**{**raw, **({"layer_norm_eps": float(raw["layer_norm_eps"])} if "layer_norm_eps" in raw else {})})


def _reject_unknown(mapping: dict, allowed: tuple[str, ...], source: str, where: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise SpaceError(f"{source}: unknown key `{key}` in {where} (allowed: {', '.join(allowed)})")


def _checked_keys(mapping: dict, keys: tuple[str, ...], source: str, where: str) -> tuple[str, ...]:
    for key in mapping:
        if key in TIED_KEYS and key not in keys:
            raise SpaceError(f"{source}: {where}.{key} follows from hidden_size when the family has no bottleneck;"
                             " leave it out")
    _reject_unknown(mapping, keys, source, where)
    for key in keys:
        if key not in mapping:
            raise SpaceError(f"{source}: {where}.{key} is missing")
    return keys


def _positive_int(value: Any, source: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpaceError(f"{source}: {where} must be a positive integer, got {value!r}")
    return value


def _choice_list(raw: dict, key: str, source: str) -> tuple[int, ...]:
    values = raw[key]
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, list) or not values:
        raise SpaceError(f"{source}: choices.{key} must be a non-empty list of positive integers")
    ints = tuple(_positive_int(value, source, f"choices.{key}") for value in values)
    if len(set(ints)) != len(ints):
        raise SpaceError(f"{source}: choices.{key} lists a value twice")
    return tuple(sorted(ints))


def _max_values(raw: Any, largest: dict[str, int], keys: tuple[str, ...], source: str) -> dict[str, int]:
    if raw is None:
        values = dict(largest)
    elif not isinstance(raw, dict):
        raise SpaceError(f"{source}: `max` must map each architecture key to an int")
    else:
        tied = {key: raw[key] for key in TIED_KEYS if key in raw and key not in keys}
        rest = {key: value for key, value in raw.items() if key not in tied}
        values = {key: _positive_int(rest[key], source, f"max.{key}") for key in _checked_keys(rest, keys, source, "max")}
        values |= {key: _positive_int(value, source, f"max.{key}") for key, value in tied.items()}
    return values


def _check_heads(choices: dict[str, tuple[int, ...]], max_values: dict[str, int], source: str) -> None:
    for heads in choices["num_attention_heads"]:
        for width in (*choices["intra_bottleneck_size"], max_values["intra_bottleneck_size"]):
            if width % heads:
                raise SpaceError(
                    f"{source}: choices.num_attention_heads has {heads}, which does not divide "
                    f"intra_bottleneck_size {width}"
                )
    if max_values["intra_bottleneck_size"] % max_values["num_attention_heads"]:
        raise SpaceError(f"{source}: max.num_attention_heads must divide max.intra_bottleneck_size")


def _tie_to_heads(choices: dict[str, tuple[int, ...]], max_values: dict[str, int], source: str) -> None:
    """No bottleneck: the attention is as wide as the hidden size, in whole heads."""
    hidden = max_values["hidden_size"]
    max_values.setdefault("intra_bottleneck_size", hidden)
    if max_values["intra_bottleneck_size"] != hidden:
        raise SpaceError(f"{source}: max.intra_bottleneck_size must equal max.hidden_size without a bottleneck")
    if "num_attention_heads" not in max_values:
        raise SpaceError(f"{source}: max.num_attention_heads is missing (it sets the head size)")
    heads = max_values["num_attention_heads"]
    if hidden % heads:
        raise SpaceError(f"{source}: max.num_attention_heads must divide max.hidden_size")
    head_size = hidden // heads
    for width in choices["hidden_size"]:
        if width % head_size:
            raise SpaceError(f"{source}: choices.hidden_size has {width}, not a whole number of {head_size}-wide heads")
