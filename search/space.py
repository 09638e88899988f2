"""Search spaces: the allowed values of each MobileBERT knob, declared in YAML.

A space file has `choices` (a non-empty list of positive ints for every key of
edgenas.types.ARCH_KEYS) and an optional `max` (the supernet's size; default:
the largest choice of each key). Rules checked on load:

- no unknown keys, no missing keys, no empty or duplicate choice lists;
- no choice larger than `max` (every sub-config must be a slice of the supernet);
- every `num_attention_heads` choice divides every `intra_bottleneck_size`
  choice and the max bottleneck, so any sampled combination has whole heads.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from edgenas.errors import EdgenasError
from edgenas.types import ARCH_KEYS, ArchConfig

BUILTIN_SPACES = ("demo", "mobilebert")


class SpaceError(EdgenasError):
    """An invalid search-space file: the message names the file and the key."""


@dataclass(frozen=True)
class SearchSpace:
    """Allowed values per architecture knob plus the supernet (max) config."""

    choices: dict[str, tuple[int, ...]]
    max: ArchConfig
    name: str = "custom"

    @classmethod
    def point(cls, arch: ArchConfig, name: str = "point") -> "SearchSpace":
        """A one-architecture space (stand-alone training of one subnet)."""
        return cls(choices={key: (value,) for key, value in arch.to_dict().items()}, max=arch, name=name)

    def max_arch(self) -> ArchConfig:
        """The supernet's config (every sub-config is a slice of it)."""
        return self.max

    def min_arch(self) -> ArchConfig:
        """The smallest choice of every knob."""
        return ArchConfig(**{key: min(values) for key, values in self.choices.items()})

    def sample(self, rng: random.Random) -> ArchConfig:
        """A uniformly random sub-config."""
        return ArchConfig(**{key: rng.choice(self.choices[key]) for key in ARCH_KEYS})

    def contains(self, arch: ArchConfig) -> bool:
        """Whether every knob of `arch` is one of the allowed values."""
        return all(getattr(arch, key) in self.choices[key] for key in ARCH_KEYS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max": self.max.to_dict(),
            "choices": {key: list(self.choices[key]) for key in ARCH_KEYS},
        }

    def content_hash(self) -> str:
        """Hash of the max config and choices (the name does not matter)."""
        body = {key: value for key, value in self.to_dict().items() if key != "name"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A built-in space ("demo", "mobilebert") or a YAML file; SpaceError if invalid."""
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
    if not isinstance(doc, dict):
        raise SpaceError(f"{source}: expected a mapping with `choices` (and optional `max`, `name`)")
    _reject_unknown(doc, ("name", "max", "choices"), source, "top level")
    raw_choices = doc.get("choices")
    if not isinstance(raw_choices, dict):
        raise SpaceError(f"{source}: `choices` must map each of {', '.join(ARCH_KEYS)} to a list of ints")
    choices = {key: _choice_list(raw_choices, key, source) for key in _checked_keys(raw_choices, source, "choices")}
    largest = {key: max(values) for key, values in choices.items()}
    max_values = _max_values(doc.get("max"), largest, source)
    for key in ARCH_KEYS:
        if largest[key] > max_values[key]:
            raise SpaceError(f"{source}: choices.{key} has {largest[key]}, larger than max.{key} = {max_values[key]}")
    _check_heads(choices, max_values, source)
    return SearchSpace(choices=choices, max=ArchConfig(**max_values), name=str(doc.get("name", default_name)))


def _reject_unknown(mapping: dict, allowed: tuple[str, ...], source: str, where: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise SpaceError(f"{source}: unknown key `{key}` in {where} (allowed: {', '.join(allowed)})")


def _checked_keys(mapping: dict, source: str, where: str) -> tuple[str, ...]:
    _reject_unknown(mapping, ARCH_KEYS, source, where)
    for key in ARCH_KEYS:
        if key not in mapping:
            raise SpaceError(f"{source}: {where}.{key} is missing")
    return ARCH_KEYS


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


def _max_values(raw: Any, largest: dict[str, int], source: str) -> dict[str, int]:
    if raw is None:
        return dict(largest)
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: `max` must map each architecture key to an int")
    return {key: _positive_int(raw[key], source, f"max.{key}") for key in _checked_keys(raw, source, "max")}


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
