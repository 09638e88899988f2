"""The converter of each backend: the module its catalog record names (edgenas.runtime.backends).

A converter is imported only when used, so its torch, TensorFlow or ExecuTorch
tooling loads in the compile child alone.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from edgenas.runtime.backends import BACKENDS, Backend, QuantMode, get_backend

#: tools every conversion uses, whatever the backend: their versions key every artifact
COMMON_TOOLS = (("torch", ("torch",)), ("transformers", ("transformers",)))


class Converter(Protocol):
    """What compile/ needs of a backend's converter module."""

    def convert(self, model_dir: Path, out: Path, mode: QuantMode, seq_len: int,
                calibration: dict[str, np.ndarray] | None, work: Path, exporter: str = "default") -> None:
        """Write the artifact of `model_dir` in `mode` to `out`."""

    def describe(self, artifact: Path) -> dict[str, Any]:
        """{"inputs", "outputs", "opset", "dynamic_batch"} as the artifact declares them."""


def converter(backend: str | Backend) -> Converter:
    """The converter module a backend's record names."""
    record = backend if isinstance(backend, Backend) else get_backend(backend)
    return cast(Converter, importlib.import_module(record.converter))


def versioned_tools() -> dict[str, tuple[str, ...]]:
    """Every tool whose version goes into the meta records and cache keys: name -> its distributions."""
    return dict(COMMON_TOOLS) | {name: dists for b in BACKENDS.values() for name, dists in b.tools}
