"""The backend catalog: every runtime edgenas compiles for and runs, declared once.

A declaration names the backend, its artifact suffix, its runner class, its knobs
(allowed values and default) and its quantization modes as records. Everything
else (config validation, candidate sampling, compile checks, export, compare,
predict, bench, measure) reads the catalog and parses no mode name.

Imports only the standard library and runners.py (same folder), so it ships to
a device with the runners. Each record names the compile/ module that converts
for it (by its import path, so runtime/ never imports compile/) and the tools
whose versions key its artifacts.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runners import ExecutorchRunner, OnnxRunner, Runner, RuntimeLoadError, TfliteRunner


class UnknownBackendError(RuntimeLoadError):
    """A backend, mode or knob name the catalog does not have."""


@dataclass(frozen=True)
class Knob:
    """A runtime setting a trial may choose: its allowed values and the one used when none is given."""

    name: str
    values: tuple[Any, ...]
    default: Any
    help: str

    def check(self, value: Any) -> Any:
        """The value if allowed, else a one-line error listing the allowed ones."""
        if value not in self.values:
            allowed = ", ".join(self.spell(v) for v in self.values)
            raise UnknownBackendError(f"{self.name} must be one of {allowed}, got {value!r}")
        return value

    @staticmethod
    def spell(value: Any) -> str:
        """A value as the command line writes it (true/false for switches)."""
        return str(value).lower() if isinstance(value, bool) else str(value)

    def parse(self, text: str) -> Any:
        """A value from its command-line spelling."""
        for value in self.values:
            if text.lower() == self.spell(value).lower():
                return value
        return self.check(text)


@dataclass(frozen=True)
class QuantMode:
    """One quantization mode of a backend, as data rather than as a name to parse.

    calibration: how activation ranges are set from training samples (None: the
    mode needs no calibration data). nearest: the closest mode in each other
    backend, for exporting one model to every backend.
    """

    name: str
    weights: str  # "fp32", "fp16", "int8" or "int4"
    activations: str  # "float", PER_BATCH, PER_EXAMPLE or CALIBRATED
    calibration: str | None = None  # "minmax", "entropy", "percentile" or "converter" (the converter's own)
    per_channel: bool = False
    nearest: dict[str, str] = field(default_factory=dict)
    searched: bool = True  # in a search's candidates unless the config says otherwise

    @property
    def needs_calibration(self) -> bool:
        return self.calibration is not None


@dataclass(frozen=True)
class Backend:
    """One runtime: how its artifacts are named, run, tuned and quantized."""

    name: str
    short: str  # its name where columns are narrow
    suffix: str
    runner: type[Runner]
    package: str  # the module whose presence says the runtime is installed
    install: str  # how a user installs it
    knobs: tuple[Knob, ...]
    modes: tuple[QuantMode, ...]
    #: the module (a compile.converters.Converter) that compiles a saved model into this backend's artifacts
    converter: str
    #: (name, distributions) of the tools its conversion and runtime use; their versions key every artifact
    tools: tuple[tuple[str, tuple[str, ...]], ...]
    #: how its graph may be produced, where there is more than one way (the first is the default)
    exporters: tuple[str, ...] = ("default",)

    @property
    def mode_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modes)

    @property
    def artifact_file(self) -> str:
        """The artifact's name inside an exported model directory."""
        return f"model{self.suffix}"

    def mode(self, name: str) -> QuantMode:
        """The mode record, or a one-line error listing this backend's modes."""
        for mode in self.modes:
            if mode.name == name:
                return mode
        raise UnknownBackendError(f"unknown {self.name} mode {name!r}; choose one of {', '.join(self.mode_names)}")

    def knob(self, name: str) -> Knob:
        for knob in self.knobs:
            if knob.name == name:
                return knob
        raise UnknownBackendError(f"{self.name} has no knob {name!r} (it has threads"
                                  + "".join(f", {k.name}" for k in self.knobs) + ")")

    def own_knobs(self, knobs: dict[str, Any]) -> dict[str, Any]:
        """This backend's knobs from a mixed set (others' are ignored), defaults filled in, values checked."""
        return {k.name: k.check(knobs[k.name]) if knobs.get(k.name) is not None else k.default for k in self.knobs}

    def missing(self) -> str | None:
        """Why this backend cannot run here (its package is absent), or None when it can."""
        if importlib.util.find_spec(self.package) is None:
            return f"{self.name} is not installed ({self.install})"
        return None

    def load(self, path: Path, threads: int = 1, **knobs: Any) -> Runner:
        """A runner for one of this backend's artifacts."""
        return self.runner(path, threads=threads, **self.own_knobs(knobs))


#: activations quantized with ranges taken over the whole batch: a row's scores depend on its neighbours
PER_BATCH = "int8, ranges per batch"
#: ranges per example (TFLite's hybrid kernels; ExecuTorch programs run one example at a time)
PER_EXAMPLE = "int8, ranges per example"
CALIBRATED = "int8, calibrated"

ONNXRUNTIME = Backend(
    name="onnxruntime", short="onnx", suffix=".onnx", runner=OnnxRunner, package="onnxruntime",
    install="pip install onnxruntime", converter="edgenas.compile.onnx", exporters=("default", "tf2onnx"),
    tools=(("onnxruntime", ("onnxruntime",)), ("onnx", ("onnx",)), ("tf2onnx", ("tf2onnx",)),
           ("tensorflow", ("tensorflow-cpu", "tensorflow"))),
    knobs=(Knob("graph_optimization", ("disable", "basic", "extended", "all"), "all",
                "ONNX Runtime graph optimisation level"),),
    modes=(
        QuantMode("fp32", "fp32", "float", nearest={"tflite": "fp32", "executorch": "fp32"}),
        QuantMode("dynamic_int8", "int8", PER_BATCH, nearest={"tflite": "dynamic_int8", "executorch": "dynamic_int8"}),
        QuantMode("dynamic_int8_per_channel", "int8", PER_BATCH, per_channel=True,
                  nearest={"tflite": "dynamic_int8", "executorch": "dynamic_int8"}),
        QuantMode("static_int8_minmax", "int8", CALIBRATED, calibration="minmax",
                  nearest={"tflite": "full_int8", "executorch": "static_int8"}),
        QuantMode("static_int8_entropy", "int8", CALIBRATED, calibration="entropy", searched=False,
                  nearest={"tflite": "full_int8", "executorch": "static_int8"}),
        QuantMode("static_int8_percentile", "int8", CALIBRATED, calibration="percentile", searched=False,
                  nearest={"tflite": "full_int8", "executorch": "static_int8"}),
        QuantMode("fp16", "fp16", "float", searched=False, nearest={"tflite": "fp16", "executorch": "fp32"}),
        # int4 weights in blocks, each with its own scale, the word embeddings too; activations stay float
        QuantMode("int4_weights", "int4", "float", searched=False,
                  nearest={"tflite": "dynamic_int8", "executorch": "dynamic_int8"}),
    ),
)

TFLITE = Backend(
    name="tflite", short="tflite", suffix=".tflite", runner=TfliteRunner, package="ai_edge_litert",
    install="pip install ai-edge-litert", converter="edgenas.compile.tflite",
    tools=(("tensorflow", ("tensorflow-cpu", "tensorflow")), ("ai_edge_litert", ("ai-edge-litert",))),
    knobs=(Knob("xnnpack", (True, False), True, "TFLite: run through the XNNPACK delegate"),),
    modes=(
        QuantMode("fp32", "fp32", "float", nearest={"onnxruntime": "fp32", "executorch": "fp32"}),
        QuantMode("dynamic_int8", "int8", PER_EXAMPLE, nearest={"onnxruntime": "dynamic_int8", "executorch": "dynamic_int8"}),
        QuantMode("fp16", "fp16", "float", nearest={"onnxruntime": "fp16", "executorch": "fp32"}),
        QuantMode("full_int8", "int8", CALIBRATED, calibration="converter", per_channel=True,
                  nearest={"onnxruntime": "static_int8_minmax", "executorch": "static_int8"}),
    ),
)

EXECUTORCH = Backend(
    name="executorch", short="executorch", suffix=".pte", runner=ExecutorchRunner, package="executorch",
    install="pip install executorch (beside torch)", converter="edgenas.compile.executorch",
    tools=(("executorch", ("executorch",)), ("torchao", ("torchao",))),
    knobs=(),
    modes=(
        QuantMode("fp32", "fp32", "float", nearest={"onnxruntime": "fp32", "tflite": "fp32"}),
        QuantMode("dynamic_int8", "int8", PER_EXAMPLE, per_channel=True,
                  nearest={"onnxruntime": "dynamic_int8_per_channel", "tflite": "dynamic_int8"}),
        QuantMode("static_int8", "int8", CALIBRATED, calibration="minmax", per_channel=True,
                  nearest={"onnxruntime": "static_int8_minmax", "tflite": "full_int8"}),
    ),
)

#: the catalog, in the order tables and plots list the backends
BACKENDS: dict[str, Backend] = {b.name: b for b in (TFLITE, ONNXRUNTIME, EXECUTORCH)}
#: every knob of every backend, by name (threads is common to all and kept apart)
KNOBS: dict[str, Knob] = {k.name: k for b in BACKENDS.values() for k in b.knobs}


def get_backend(name: str) -> Backend:
    """The backend called `name`, or a one-line error listing the catalog."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise UnknownBackendError(f"unknown runtime {name!r}; choose one of {', '.join(BACKENDS)}") from None


def backend_for(path: str | Path) -> Backend:
    """The backend whose artifacts end like `path`."""
    suffix = Path(path).suffix.lower()
    for backend in BACKENDS.values():
        if backend.suffix == suffix:
            return backend
    known = ", ".join(b.suffix for b in BACKENDS.values())
    raise UnknownBackendError(f"{Path(path).name}: unknown artifact type {suffix or '(no suffix)'!r}; expected {known}")


def load_runner(path: str | Path, threads: int = 1, **knobs: Any) -> Runner:
    """Load an artifact with the runner of its backend (by suffix); knobs of other backends are ignored."""
    path = Path(path)
    backend = backend_for(path)
    if not path.is_file():
        raise RuntimeLoadError(f"artifact {path} does not exist")
    if threads < 1:
        raise RuntimeLoadError(f"threads must be at least 1, got {threads}")
    return backend.load(path, threads=threads, **knobs)
