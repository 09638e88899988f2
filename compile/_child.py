"""The compile child process: `python -m edgenas.compile._child <build>/request.json`,
or `... _child --serve`: a warm server reading one request path per stdin line and
answering each with one line (its exit-like code) on stdout.

Converts with the backend's registered converter, checks parity against torch,
writes <build>/model<suffix> and
meta.json, or <build>/error.json with a one-line reason; the converters' output
goes to <build>/compile.log. Run from api.py only.

Test hook: EDGENAS_COMPILE_FAULT=crash|hang|raise (api.py forwards the caller's
value as the request's "fault") makes the child fail that way before converting,
so tests can exercise the parent's isolation for real.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is first imported

import hashlib
import json
import signal
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgenas.compile.converters import converter
from edgenas.compile.errors import FAULT_ENV, CompileError
from edgenas.compile.torch_model import reference_logits
from edgenas.runtime.backends import backend_for, get_backend, load_runner
from edgenas.runtime.runners import INPUT_KEYS as INPUT_NAMES
from edgenas.runtime.runners import fit_seq_len



def _inject_fault(fault: str) -> None:
    if fault == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "hang":
        time.sleep(10**6)
    elif fault == "raise":
        raise RuntimeError("injected converter failure")


def _load_npz(path: str | None) -> dict[str, np.ndarray] | None:
    if path is None:
        return None
    with np.load(path) as data:
        missing = [n for n in INPUT_NAMES if n not in data]
        if missing:
            raise CompileError(f"{Path(path).name} lacks arrays {', '.join(missing)}")
        return {k: data[k] for k in data.files if k in INPUT_NAMES or k == "labels"}


def build(req: dict[str, Any], build_dir: Path, work: Path) -> Path:
    """Convert per the request with the backend's registered converter; return the artifact path."""
    backend = get_backend(req["runtime"])
    seq_len = int(req["seq_len"])
    calibration = _load_npz(req["calibration"])
    if calibration is not None:
        calibration = fit_seq_len({k: v for k, v in calibration.items() if k in INPUT_NAMES}, seq_len)
    out = build_dir / backend.artifact_file
    converter(backend).convert(Path(req["model_dir"]), out, backend.mode(req["mode"]), seq_len, calibration,
                                    work, req["converter"])
    return out


def check(artifact: Path, model_dir: Path, data: dict[str, np.ndarray], seq_len: int) -> dict[str, Any]:
    """Parity vs torch fp32 and accuracy, both through the runtime that will run the artifact."""
    data = fit_seq_len(data, seq_len)  # labels are 1-D: left as they are
    import torch

    got = load_runner(artifact, threads=1).predict_logits({n: data[n] for n in INPUT_NAMES})
    torch.set_num_threads(1)  # the child shares the machine with the search that started it
    ref = reference_logits(model_dir, data)
    out: dict[str, Any] = {"parity": {"n": int(len(ref)),
                                      "argmax_agreement": float((got.argmax(-1) == ref.argmax(-1)).mean()),
                                      "max_abs_logit_diff": float(np.abs(got - ref).max())}}
    if "labels" in data and got.ndim == 2:  # a classifier; QA models are scored on answer spans by measure
        out["accuracy"] = float((got.argmax(1) == data["labels"]).mean())
        out["torch_accuracy"] = float((ref.argmax(1) == data["labels"]).mean())
    return out


def _die_with_parent(poll_s: float = 0.5) -> None:
    """End this process when the caller dies (kill -9 included), so no converter is orphaned."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_request(request_path: str) -> int:
    """Run one request; every failure ends as error.json with a one-line reason."""
    build_dir = Path(request_path).parent
    req = json.loads(Path(request_path).read_text())
    work = build_dir / "work"
    work.mkdir()
    os.chdir(work)  # ORT quantization drops <uuid>.data files into the cwd
    try:
        _inject_fault(req.get("fault", os.environ.get(FAULT_ENV, "")))
        start = time.perf_counter()
        artifact = build(req, build_dir, work)
        compile_time = time.perf_counter() - start
        meta = {k: req[k] for k in ("runtime", "mode", "converter", "seq_len")}
        meta |= {"file": artifact.name, "size_bytes": artifact.stat().st_size,
                 "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
                 **converter(backend_for(artifact)).describe(artifact),
                 "versions": req["versions"], "compile_time_s": round(compile_time, 3),
                 "parity": None, "accuracy": None}
        if req["check_data"]:
            start = time.perf_counter()
            meta |= check(artifact, Path(req["model_dir"]), _load_npz(req["check_data"]), int(req["seq_len"]))
            meta["check_time_s"] = round(time.perf_counter() - start, 3)
        (build_dir / "meta.json.tmp").write_text(json.dumps(meta, indent=2))
        os.replace(build_dir / "meta.json.tmp", build_dir / "meta.json")
        return 0
    except Exception as exc:  # noqa: BLE001 - the reason travels to the parent as one line
        traceback.print_exc()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        (build_dir / "error.json").write_text(json.dumps({"reason": f"{type(exc).__name__}: {reason}"[:300]}))
        return 1
    finally:
        os.chdir(build_dir)
        import shutil

        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _output_to(log_path: Path) -> Iterator[None]:
    """Send fds 1 and 2 (Python's and the C libraries' output) to log_path for a while."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def serve() -> int:
    """Answer requests from stdin until EOF; answers go on a private copy of stdout."""
    _die_with_parent()
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray prints between requests must not break the protocol
    while line := sys.stdin.readline():
        request_path = line.strip()
        with _output_to(Path(request_path).parent / "compile.log"):
            code = run_request(request_path)
        os.chdir(tempfile.gettempdir())  # the build dir is renamed or removed next
        answers.write(f"{code}\n")
    return 0


def main(argv: list[str]) -> int:
    """One request (`_child REQUEST`) or the warm server (`_child --serve`)."""
    if argv == ["--serve"]:
        return serve()
    _die_with_parent()
    return run_request(argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
