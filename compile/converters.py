"""One converter per backend of the catalog (edgenas.runtime.backends), under the backend's name.

A converter module offers
    convert(model_dir, out, mode: QuantMode, seq_len, calibration, work, exporter) -> None
    describe(artifact) -> {"inputs", "outputs", "opset", "dynamic_batch"}
and is imported only when used: its torch, TensorFlow or ExecuTorch tooling then
loads in the compile child alone.
"""

from __future__ import annotations

import importlib
from types import ModuleType

CONVERTERS = {
    "tflite": "edgenas.compile.tflite",
    "onnxruntime": "edgenas.compile.onnx",
    "executorch": "edgenas.compile.executorch",
}
#: how an artifact's graph is produced, where a backend offers more than one way
EXPORTERS = {"onnxruntime": ("default", "tf2onnx")}


def converter(backend: str) -> ModuleType:
    """The converter module registered for a backend."""
    return importlib.import_module(CONVERTERS[backend])
