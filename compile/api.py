"""compile_artifact: a saved MobileBERT -> a checked, cached artifact for one backend of the catalog.

The conversion runs in a child process (edgenas.compile._child) under a time
limit, so a converter that crashes or hangs fails one candidate, not the caller.
The child is a warm server kept per calling process (torch/TensorFlow imported
once), replaced after a crash, a timeout or SERVER_MAX_REQUESTS requests;
EDGENAS_COMPILE_SERVER=0 starts one fresh child per compile instead.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edgenas.compile.converters import versioned_tools
from edgenas.compile.errors import FAULT_ENV, CompileError
from edgenas.compile.onnx import int8_reduce_range
from edgenas.runtime.backends import UnknownBackendError, get_backend
from edgenas.runtime.runners import DEFAULT_SEQ_LEN

#: bump when the produced artifacts change for the same inputs (invalidates the cache)
COMPILER_VERSION = "11"


@dataclass
class Artifact:
    """A compiled model file and its metadata record (also stored as meta.json beside it)."""

    path: Path
    meta: dict[str, Any]


def versions() -> dict[str, str | None]:
    """Installed versions of the converters and runtimes (None if absent)."""
    out: dict[str, str | None] = {}
    for key, dists in versioned_tools().items():
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
    try:
        quant_mode = get_backend(runtime).mode(mode)
    except UnknownBackendError as exc:
        raise CompileError(str(exc)) from None
    exporters = get_backend(runtime).exporters
    if converter not in exporters:
        raise CompileError(f"{runtime} has no converter {converter!r}; choose one of {', '.join(exporters)}")
    if seq_len < 2:
        raise CompileError(f"seq_len must be at least 2, got {seq_len}")
    if not (model_dir / "config.json").is_file() or not (model_dir / "model.safetensors").is_file():
        raise CompileError(f"{model_dir} is not a save_pretrained dir (needs config.json and model.safetensors)")
    if quant_mode.needs_calibration and calibration is None:
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
    """Cache key: weights + config + runtime/mode/converter/seq_len + tool versions + this CPU's int8
    weight range + data files."""
    digest = hashlib.sha256()
    digest.update(json.dumps({**request, "compiler": COMPILER_VERSION, "versions": versions(),
                              "int8_reduce_range": int8_reduce_range()}, sort_keys=True).encode())
    _hash_files(digest, [model_dir / "config.json", model_dir / "model.safetensors", calibration, check_data])
    return digest.hexdigest()[:32]


def compile_artifact(model_dir: Path, runtime: str, mode: str, *, seq_len: int = DEFAULT_SEQ_LEN,
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
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir)).resolve()
    try:
        request |= {"model_dir": str(model_dir.resolve()), "build_dir": str(build), "versions": versions(),
                    "calibration": str(Path(calibration).resolve()) if calibration else None,
                    "check_data": str(Path(check_data).resolve()) if check_data else None,
                    "fault": os.environ.get(FAULT_ENV, "")}  # read now: tests set it in the caller
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


#: env switch: "0" runs one fresh child per compile instead of the warm compile server
SERVER_ENV = "EDGENAS_COMPILE_SERVER"
#: a server is replaced after this many requests, bounding growth of TF graph state
SERVER_MAX_REQUESTS = 25


class _Server:
    """One long-lived `_child --serve` process: a request path per stdin line, one answer line back."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc = subprocess.Popen([sys.executable, "-m", "edgenas.compile._child", "--serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=tempfile.gettempdir(), env=env, start_new_session=True)
        self.served = 0

    def stale(self, env: dict[str, str]) -> bool:
        """Dead, used up, or started under another environment than the caller's now."""
        return self.proc.poll() is not None or self.served >= SERVER_MAX_REQUESTS or env != self.env

    def request(self, request_path: Path, timeout_s: float) -> int | None:
        """Send one request; its exit-like code, or None on timeout (the server is then killed)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.served += 1
        try:
            self.proc.stdin.write(f"{request_path}\n".encode())
            self.proc.stdin.flush()
        except BrokenPipeError:  # died between requests
            return self._reap()
        deadline, answer, fd = time.monotonic() + timeout_s, b"", self.proc.stdout.fileno()
        while not answer.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.kill()
                return None
            chunk = os.read(fd, 64)
            if not chunk:  # EOF: it crashed mid-request
                return self._reap()
            answer += chunk
        return int(answer)

    def _reap(self) -> int:
        self.kill()  # the group too: a converter's helpers must not outlive it
        code = self.proc.returncode
        return code if code else 1  # it ended without answering: never a success

    def kill(self) -> None:
        """End the server and anything it started (its own process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


_server: _Server | None = None
_server_owner = os.getpid()
_server_lock = threading.Lock()


def _forget_server() -> None:
    """In a forked child: the parent's server is not ours to use or kill."""
    global _server, _server_owner, _server_lock
    _server, _server_owner, _server_lock = None, os.getpid(), threading.Lock()


os.register_at_fork(after_in_child=_forget_server)


@atexit.register
def stop_server() -> None:
    """Stop this process's compile server, if one runs (the next compile starts a fresh one)."""
    global _server
    locked = _server_lock.acquire(timeout=10)  # at exit a daemon thread may still hold it mid-compile
    try:
        if _server is not None and _server_owner == os.getpid():
            _server.kill()
        _server = None
    finally:
        if locked:
            _server_lock.release()


def server_pid() -> int | None:
    """Process id of this process's warm compile server, or None when none is running."""
    with _server_lock:
        return _server.proc.pid if _server is not None and _server.proc.poll() is None else None


def _child_env() -> dict[str, str]:
    """The caller's environment, less the fault hook (it travels in each request), TF kept quiet."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    return env | {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0")}


def _serve(request_path: Path, timeout_s: float) -> int | None:
    """Run one request on the warm server (started or replaced as needed); None on timeout."""
    global _server
    env = _child_env()
    with _server_lock:
        if _server is not None and _server.stale(env):
            _server.kill()
            _server = None
        if _server is None:
            _server = _Server(env)
        code = _server.request(request_path, timeout_s)
        if code is None or _server.proc.poll() is not None:
            _server = None  # killed or dead: the next compile starts a fresh one
        return code


def _one_shot(request_path: Path, timeout_s: float) -> int | None:
    """Run one request in a fresh child (EDGENAS_COMPILE_SERVER=0); None on timeout."""
    with open(request_path.parent / "compile.log", "wb") as log:
        # own session, so a hang is ended with its whole process group
        proc = subprocess.Popen([sys.executable, "-m", "edgenas.compile._child", str(request_path)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=request_path.parent, env=_child_env(), start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


def _run_child(build: Path, timeout_s: float, label: str) -> None:
    """Run the child on build/request.json; turn crash, hang or failure into CompileError."""
    log_path = build / "compile.log"
    run = _one_shot if os.environ.get(SERVER_ENV, "1") == "0" else _serve
    code = run(build / "request.json", timeout_s)
    if code is None:
        raise CompileError(f"compiling {label} timed out after {timeout_s:g} s")
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
