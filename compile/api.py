"""compile_artifact: a saved MobileBERT -> a checked, cached .onnx/.tflite artifact.

The conversion runs in a child process (edgenas.compile._child) under a time
limit, so a converter that crashes or hangs fails one candidate, not the caller.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edgenas.compile.errors import CompileError
from edgenas.types import QUANT_MODES

#: bump when the produced artifacts change for the same inputs (invalidates the cache)
COMPILER_VERSION = "6"
CONVERTERS = ("default", "tf2onnx")
STATIC_MODES = ("static_int8_minmax", "static_int8_entropy", "static_int8_percentile", "full_int8")
SUFFIX = {"onnxruntime": ".onnx", "tflite": ".tflite"}
#: distributions whose versions go into every meta record and cache key
VERSIONED = {"torch": ("torch",), "transformers": ("transformers",), "onnx": ("onnx",),
             "onnxruntime": ("onnxruntime",), "tensorflow": ("tensorflow-cpu", "tensorflow"),
             "tf2onnx": ("tf2onnx",), "ai_edge_litert": ("ai-edge-litert",)}


@dataclass
class Artifact:
    """A compiled model file and its metadata record (also stored as meta.json beside it)."""

    path: Path
    meta: dict[str, Any]


def versions() -> dict[str, str | None]:
    """Installed versions of the converters and runtimes (None if absent)."""
    out: dict[str, str | None] = {}
    for key, dists in VERSIONED.items():
        out[key] = None
        for dist in dists:
            try:
                out[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def _validate(model_dir: Path, runtime: str, mode: str, converter: str, seq_len: int,
              calibration: Path | None, check_data: Path | None) -> None:
    if runtime not in QUANT_MODES:
        raise CompileError(f"unknown runtime {runtime!r}; choose one of {', '.join(QUANT_MODES)}")
    if mode not in QUANT_MODES[runtime]:
        raise CompileError(f"unknown {runtime} mode {mode!r}; choose one of {', '.join(QUANT_MODES[runtime])}")
    if converter not in CONVERTERS:
        raise CompileError(f"unknown converter {converter!r}; choose one of {', '.join(CONVERTERS)}")
    if converter == "tf2onnx" and runtime != "onnxruntime":
        raise CompileError("converter 'tf2onnx' produces ONNX; use it with runtime 'onnxruntime'")
    if seq_len < 2:
        raise CompileError(f"seq_len must be at least 2, got {seq_len}")
    if not (model_dir / "config.json").is_file() or not (model_dir / "model.safetensors").is_file():
        raise CompileError(f"{model_dir} is not a save_pretrained dir (needs config.json and model.safetensors)")
    if mode in STATIC_MODES and calibration is None:
        raise CompileError(f"mode {mode} needs calibration data: pass calibration=<.npz of training samples>")
    for name, path in (("calibration", calibration), ("check_data", check_data)):
        if path is not None and not Path(path).is_file():
            raise CompileError(f"{name} file {path} does not exist")


def _hash_files(digest: Any, paths: list[Path | None]) -> None:
    for path in paths:
        digest.update(b"\0" if path is None else path.name.encode())
        if path is not None:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)


def content_key(model_dir: Path, request: dict[str, Any], calibration: Path | None, check_data: Path | None) -> str:
    """Cache key: weights + config + runtime/mode/converter/seq_len + tool versions + data files."""
    digest = hashlib.sha256()
    digest.update(json.dumps({**request, "compiler": COMPILER_VERSION, "versions": versions()},
                             sort_keys=True).encode())
    _hash_files(digest, [model_dir / "config.json", model_dir / "model.safetensors", calibration, check_data])
    return digest.hexdigest()[:32]


def compile_artifact(model_dir: Path, runtime: str, mode: str, *, seq_len: int = 128,
                     calibration: Path | None = None, check_data: Path | None = None, cache_dir: Path,
                     timeout_s: float = 600.0, converter: str = "default") -> Artifact:
    """Compile model_dir for runtime/mode in a time-limited child, check it against torch, cache it."""
    model_dir, cache_dir = Path(model_dir), Path(cache_dir)
    _validate(model_dir, runtime, mode, converter, seq_len, calibration, check_data)
    request = {"runtime": runtime, "mode": mode, "converter": converter, "seq_len": int(seq_len)}
    final = cache_dir / content_key(model_dir, request, calibration, check_data)
    if (final / "meta.json").is_file():
        return _load(final, cached=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    try:
        request |= {"model_dir": str(model_dir.resolve()), "build_dir": str(build), "versions": versions(),
                    "calibration": str(Path(calibration).resolve()) if calibration else None,
                    "check_data": str(Path(check_data).resolve()) if check_data else None}
        (build / "request.json").write_text(json.dumps(request))
        _run_child(build, timeout_s, f"{runtime}/{mode}")
        (build / "request.json").unlink()
        try:
            os.rename(build, final)  # atomic: the key dir appears complete or not at all
        except OSError:
            if not (final / "meta.json").is_file():  # not a concurrent twin that won the race
                raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return _load(final, cached=False)


def _run_child(build: Path, timeout_s: float, label: str) -> None:
    """Run the child on build/request.json; turn crash, hang or failure into CompileError."""
    log_path = build / "compile.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0")}
    with open(log_path, "wb") as log:
        # own session, so a hang is ended with its whole process group
        proc = subprocess.Popen([sys.executable, "-m", "edgenas.compile._child", str(build / "request.json")],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=build,
                                env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise CompileError(f"compiling {label} timed out after {timeout_s:g} s") from None
    error = build / "error.json"
    if error.is_file():
        raise CompileError(f"compiling {label} failed: {json.loads(error.read_text())['reason']}")
    if code != 0:
        how = f"died from {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        raise CompileError(f"compiling {label}: the converter process {how}{_last_line(log_path)}")
    if not (build / "meta.json").is_file():
        raise CompileError(f"compiling {label}: the converter process wrote no artifact")


def _last_line(log_path: Path) -> str:
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    return f" ({lines[-1][:200]})" if lines else ""


def _load(directory: Path, cached: bool) -> Artifact:
    meta = json.loads((directory / "meta.json").read_text())
    meta["cached"] = cached
    return Artifact(path=directory / meta["file"], meta=meta)
