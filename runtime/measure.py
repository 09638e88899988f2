"""Time an artifact and score its accuracy through the runtime, on this device.

Runnable as ``python -m edgenas.runtime.measure ARTIFACT [--data NPZ] ...``: prints
one JSON object on stdout; on failure prints {"error": ..., "kind": ...} and exits 3.
Imports only numpy, runners.py, backends.py, tasks.py, measurement.py and (for QA) qa.py, all in this folder,
so a target can copy them to a device and run them there.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import resource
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .backends import KNOBS, backend_for, load_runner
from .measurement import Measurement
from .tasks import task_of_set
from .runners import DEFAULT_SEQ_LEN, INPUT_KEYS, Runner, RuntimeLoadError, RuntimeMissingError, fit_seq_len

ERROR_EXIT_CODE = 3
#: timing goes on (up to max_runs) while the median's 95 % half-width exceeds this share of it
NOISE_LIMIT = 0.02
NOISE_BLOCKS = 5  # consecutive blocks whose medians give the median's uncertainty
T975_4DF = 2.776  # two-sided 95 % Student t quantile for NOISE_BLOCKS - 1 degrees of freedom
CLS_ID, SEP_ID = 101, 102  # BERT uncased [CLS]/[SEP]; synthetic ids stay inside its 30522 vocab


@dataclass(frozen=True)
class MeasureRequest:
    """How to measure one artifact: the one source of measure()'s options, its command line and its parser."""

    threads: int = 1
    warmup: int = 10
    runs: int = 50
    max_runs: int | None = None
    batch_size: int = 1
    max_eval: int | None = None
    logits: bool = False
    seq_len: int | None = None  # a dynamic-shape artifact's timed length (default: the data's, else 128)
    score_jobs: int = 1  # processes scoring the set at once (0: as many as this process's CPUs hold)
    cpus: tuple[int, ...] | None = None  # pins the measuring child process (command line only)
    knobs: dict[str, Any] = field(default_factory=dict)  # runtime knobs of the backend catalog

    HELP: ClassVar[dict[str, str]] = {"max_runs": "timing goes on up to this while noisy (default 4 x runs)",
            "batch_size": "accuracy batch (1: scores independent of batching)",
            "max_eval": "score the first N rows (QA: questions)", "logits": "also print the scored rows' logits",
            "seq_len": "timed sequence length of a dynamic-shape artifact (default: the data's, else 128)",
            "cpus": "comma-separated CPU ids to pin this process to",
            "score_jobs": "processes that score the set at once, each with --threads threads, after the timing "
                          "(0: as many as this process's CPUs hold; batch 1 only)"}

    @classmethod
    def of(cls, **options: Any) -> "MeasureRequest":
        """A request from keyword options, the catalog's knobs among them; TypeError names an unknown one."""
        names = {f.name for f in fields(cls)} - {"knobs"}
        unknown = set(options) - names - set(KNOBS)
        if unknown:
            raise TypeError(f"unknown measurement knobs: {', '.join(sorted(unknown))}")
        given = {k: v for k, v in options.items() if k in names and v is not None}
        if given.get("cpus") is not None:
            given["cpus"] = tuple(int(c) for c in given["cpus"])
        knobs = {k: KNOBS[k].check(v) for k, v in options.items() if k in KNOBS and v is not None}
        return cls(**given, knobs=knobs)

    def to_args(self, artifact: str, data: str | None) -> list[str]:
        """The command line of `python -m ...measure` for this request (defaults left out)."""
        args = [artifact] + (["--data", data] if data else [])
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "knobs" or value == f.default:
                continue
            flag = f"--{f.name.replace('_', '-')}"
            args += [flag] if value is True else [flag, ",".join(map(str, value)) if f.name == "cpus" else str(value)]
        for name, value in self.knobs.items():
            args += [f"--{name.replace('_', '-')}", KNOBS[name].spell(value)]
        return args

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field (and per catalog knob), typed and defaulted by the field."""
        for f in fields(cls):
            if f.name == "knobs":
                continue
            flag = f"--{f.name.replace('_', '-')}"
            if f.default is False:
                parser.add_argument(flag, action="store_true", help=cls.HELP.get(f.name))
            elif f.name == "cpus":
                parser.add_argument(flag, type=lambda v: tuple(int(c) for c in v.split(",")), help=cls.HELP[f.name])
            else:
                parser.add_argument(flag, type=int, default=f.default, help=cls.HELP.get(f.name))
        for knob in KNOBS.values():
            parser.add_argument(f"--{knob.name.replace('_', '-')}", type=knob.parse, default=None, help=knob.help)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "MeasureRequest":
        return cls.of(**{f.name: getattr(args, f.name) for f in fields(cls) if f.name != "knobs"},
                      **{name: getattr(args, name) for name in KNOBS})


class DataError(ValueError):
    """The tokenized dataset file is missing or malformed."""


def cpu_model() -> str:
    """The CPU model string (x86 'model name', Raspberry Pi 'Model'), else the machine type."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine() or "unknown CPU"


def device_info() -> dict[str, Any]:
    """Who measured: hostname, CPU model, machine type, cores, runtime library versions."""
    cpu = cpu_model()
    host = socket.gethostname()
    return {"device": f"{host} ({cpu})", "hostname": host, "cpu": cpu, "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}


def load_data(path: str | Path, max_eval: int | None = None) -> dict[str, np.ndarray]:
    """Read a tokenized .npz (input_ids, attention_mask, token_type_ids (N, S), optional labels)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise DataError(f"cannot read {path.name} as .npz: {exc}") from exc
    if "input_ids" not in arrays or arrays["input_ids"].ndim != 2:
        raise DataError(f"{path.name} needs a 2-D input_ids array (has {', '.join(arrays) or 'nothing'})")
    n, seq = arrays["input_ids"].shape
    arrays.setdefault("attention_mask", np.ones((n, seq), dtype=np.int64))
    arrays.setdefault("token_type_ids", np.zeros((n, seq), dtype=np.int64))
    task = task_of_set(arrays)
    if max_eval is not None:
        arrays = task.first(arrays, max_eval) if task is not None else {k: v[:max_eval] for k, v in arrays.items()}
    return arrays


def synthetic_example(seq_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One fixed pseudo-random example: [CLS] ids [SEP], all-ones mask, zero token types."""
    ids = np.random.default_rng(seed).integers(1000, 5000, size=(1, seq_len), dtype=np.int64)
    ids[0, 0], ids[0, -1] = CLS_ID, SEP_ID
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def time_runs(runner: Runner, feeds: dict[str, np.ndarray], warmup: int, runs: int) -> np.ndarray:
    """Warm up, then return the wall time in ms of each of `runs` timed runs."""
    for _ in range(warmup):
        runner.run(feeds)
    times = np.empty(runs, dtype=np.float64)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed run is noise, not model latency
    try:
        for i in range(runs):
            start = time.perf_counter_ns()
            runner.run(feeds)
            times[i] = (time.perf_counter_ns() - start) / 1e6
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def median_uncertainty(times_ms: np.ndarray) -> float:
    """Relative 95 % half-width of the median of times_ms, from the medians of consecutive blocks.

    Blocks rather than single runs: a shared machine's speed drifts over seconds, so
    neighbouring runs are correlated and single-run statistics would understate the error.
    """
    if len(times_ms) < 2 * NOISE_BLOCKS:
        return float("inf")
    medians = np.array([np.median(block) for block in np.array_split(times_ms, NOISE_BLOCKS)])
    return float(T975_4DF * medians.std(ddof=1) / np.sqrt(NOISE_BLOCKS) / np.median(times_ms))


def time_until_stable(runner: Runner, feeds: dict[str, np.ndarray], warmup: int, runs: int,
                      max_runs: int, limit: float = NOISE_LIMIT) -> np.ndarray:
    """Time `runs` runs, then keep doubling them (up to max_runs) while the median is uncertain beyond limit.

    Every run stays in the result: a noisy machine is measured for longer, never filtered.
    """
    times = time_runs(runner, feeds, warmup, runs)
    while median_uncertainty(times) > limit and len(times) < max_runs:
        times = np.concatenate([times, time_runs(runner, feeds, 0, min(len(times), max_runs - len(times)))])
    return times


def latency_stats(times_ms: np.ndarray) -> dict[str, float]:
    """Median, p90, p99, mean, sample std and coefficient of variation of timings in ms."""
    mean = float(times_ms.mean())
    std = float(times_ms.std(ddof=1)) if len(times_ms) > 1 else 0.0
    return {"median_ms": float(np.median(times_ms)), "p90_ms": float(np.percentile(times_ms, 90)),
            "p99_ms": float(np.percentile(times_ms, 99)), "mean_ms": mean, "std_ms": std,
            "min_ms": float(times_ms.min()), "cv": std / mean if mean > 0 else 0.0,
            "median_ci95": _finite_or_none(median_uncertainty(times_ms))}


def _finite_or_none(value: float) -> float | None:
    """JSON has no infinity: too few runs to tell is null."""
    return value if np.isfinite(value) else None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's VmHWM first: ru_maxrss survives exec, so a child started from a big
    parent would report the parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def score_logits(logits: np.ndarray, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """How good the logits of a scored set are, as its task scores them: {"accuracy", "n_eval", ...}
    (for QA "accuracy" is SQuAD's F1 as a fraction, beside "exact_match" and "windows_per_question")."""
    task = task_of_set(arrays)
    if task is None:
        raise DataError("the set has neither labels nor QA windows: nothing to score")
    return task.score(logits, arrays)


def scores(runner: Runner, data: dict[str, np.ndarray], batch_size: int, jobs: int = 1,
           load: Callable[[], Runner] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """The set's scores (score_logits) through the runtime, and the logits they came from.

    Batch 1 by default: each row scored as if alone. With jobs > 1 (batch 1 only) the rows are split into
    `jobs` contiguous shards: this runner scores the first while a spawned process per other shard makes
    its own runner with `load` (a picklable loader of the same artifact, threads and knobs), so each row's
    logits are the ones a single runner gives, only sooner.
    """
    inputs = {k: data[k] for k in INPUT_KEYS}
    if jobs <= 1 or batch_size != 1 or load is None or len(inputs["input_ids"]) < 2 * jobs:
        logits = runner.predict_logits(inputs, batch_size=batch_size)
    else:
        logits = sharded_logits(runner, inputs, jobs, load)
    return score_logits(logits, data), logits


def scoring_jobs(requested: int, threads: int) -> int:
    """`requested` scoring processes, or for 0 as many as this process's CPUs hold at `threads` each."""
    if requested > 0:
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, threads))


def sharded_logits(runner: Runner, inputs: dict[str, np.ndarray], jobs: int, load: Callable[[], Runner]) -> np.ndarray:
    """Batch-1 logits of every row, the first shard here and each other in a spawned process.

    Spawned, not forked: this process already runs the runtime's thread pools, which a fork would copy
    half-alive.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    shards = np.array_split(np.arange(len(inputs["input_ids"])), jobs)
    with ProcessPoolExecutor(jobs - 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        others = [pool.submit(shard_logits, load, {k: v[rows] for k, v in inputs.items()}) for rows in shards[1:]]
        first = runner.predict_logits({k: v[shards[0]] for k, v in inputs.items()}, batch_size=1)
        return np.concatenate([first, *(future.result() for future in others)])


def shard_logits(load: Callable[[], Runner], inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Batch-1 logits of a shard of rows, through a runner of this process's own (sharded_logits' worker)."""
    return load().predict_logits(inputs, batch_size=1)


def measure(artifact: str | Path, data: str | Path | None = None, **options: Any) -> Measurement:
    """Time batch-1 inference (and accuracy if data has labels) of one artifact in this process.

    options: the fields of MeasureRequest and the runtime knobs, runtime settings from the backend catalog (e.g. xnnpack, graph_optimization);
    those of other backends are ignored, so one set serves every artifact. logits: also
    return the scored rows' logits (to compare with torch without running them again).

    Timing goes on past `runs` (up to max_runs, default 4 x runs) while the median is
    uncertain by more than NOISE_LIMIT; "noisy" says it stayed so. Accuracy runs at
    batch_size 1 by default, because ONNX Runtime's dynamic int8 quantizes activations
    per batch: a row's scores would otherwise depend on its neighbours.
    """
    request = MeasureRequest.of(**options)
    threads, warmup, runs, batch_size, max_eval, logits, knobs = (
        request.threads, request.warmup, request.runs, request.batch_size, request.max_eval, request.logits,
        request.knobs)
    max_runs = 4 * runs if request.max_runs is None else request.max_runs
    if runs < 1 or warmup < 0 or batch_size < 1 or max_runs < runs or request.score_jobs < 0:
        raise ValueError("runs and batch_size must be >= 1, warmup and score_jobs >= 0 and max_runs >= runs")
    arrays = load_data(data, max_eval) if data is not None else None
    artifact = Path(artifact)
    start = time.perf_counter()
    own_knobs = backend_for(artifact).own_knobs(knobs)
    load = partial(load_runner, artifact, threads=threads, **own_knobs)  # also each scoring process's loader
    runner = load()
    load_ms = (time.perf_counter() - start) * 1e3
    if request.seq_len is not None and runner.seq_len not in (None, request.seq_len):
        raise ValueError(f"{artifact.name} is compiled for sequence length {runner.seq_len}, not {request.seq_len}")
    seq_len = (runner.seq_len or request.seq_len
               or (arrays["input_ids"].shape[1] if arrays is not None else DEFAULT_SEQ_LEN))
    example = ({k: arrays[k][:1] for k in INPUT_KEYS} if arrays is not None and len(arrays["input_ids"])
               else synthetic_example(seq_len))
    example = fit_seq_len(example, seq_len)
    times = time_until_stable(runner, example, warmup, runs, max_runs)
    stats = latency_stats(times)
    result = Measurement(
        **stats, runs=len(times), warmup=warmup, noisy=stats["median_ci95"] is None or stats["median_ci95"] > NOISE_LIMIT,
        runtime=runner.runtime, threads=threads, seq_len=seq_len, batch=1, artifact=artifact.name,
        artifact_mb=artifact.stat().st_size / 2**20, load_ms=load_ms, peak_rss_mb=peak_rss_mb(), **device_info(),
        knobs=own_knobs)
    if arrays is not None and task_of_set(arrays) is not None:
        jobs = scoring_jobs(request.score_jobs, threads)
        scored_set, scored = scores(runner, arrays, batch_size, jobs, load)
        result = result.with_scores(scored_set)
        if logits:
            result = dataclasses.replace(result, logits=scored.tolist())
    return result


def options_of(request: MeasureRequest) -> dict[str, Any]:
    """measure()'s keyword options for a request (its knobs flattened beside its fields)."""
    return {**{f.name: getattr(request, f.name) for f in fields(request) if f.name not in ("knobs", "cpus")},
            **request.knobs}


def _error_kind(exc: BaseException) -> str:
    """Classify a failure for the caller: missing_runtime, rejected, data or error."""
    if isinstance(exc, RuntimeMissingError):
        return "missing_runtime"
    if isinstance(exc, RuntimeLoadError):
        return "rejected"
    if isinstance(exc, DataError):
        return "data"
    return "error"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgenas.runtime.measure", description=__doc__.splitlines()[0])
    p.add_argument("artifact")
    p.add_argument("--data", default=None, help="tokenized .npz (input_ids, attention_mask, token_type_ids, labels; "
                                                "or QA windows with offsets, example, contexts, answers)")
    MeasureRequest.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI: print the measurement (or an error) as one JSON object on stdout."""
    args = _parser().parse_args(argv)
    try:
        request = MeasureRequest.from_namespace(args)
        if request.cpus:
            os.sched_setaffinity(0, set(request.cpus))
        result = measure(args.artifact, args.data, **options_of(request))
    except Exception as exc:  # the caller reads the error from stdout, never a traceback
        message = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(json.dumps({"error": message, "kind": _error_kind(exc), **device_info()}))
        return ERROR_EXIT_CODE
    print(json.dumps(result.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
