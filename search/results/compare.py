"""`edgenas compare`: one exported model through TFLite and ONNX Runtime in every quantization mode.

Each mode is compiled from the directory's transformers weights, timed on the
target (batch 1, so throughput = 1000 / median ms examples per second), scored
on the directory's dev set through the runtime, and checked against torch.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.errors import EdgenasError
from edgenas.types import QUANT_MODES

COLUMNS = ("runtime", "mode", "status", "median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput_per_s",
           "size_mb", "dev_accuracy", "torch_accuracy", "torch_agreement", "max_abs_logit_diff", "error")


@dataclass
class CompareOptions:
    """The `edgenas compare` flags."""

    target: str = "local"
    modes: list[str] | None = None  # names from QUANT_MODES, or runtime/mode; None: all
    runtimes: tuple[str, ...] = ("tflite", "onnxruntime")
    threads: int = 1
    warmup: int = 5
    runs: int = 50
    out_dir: Path | None = None  # default: MODEL_DIR/compare


def plan(options: CompareOptions) -> list[tuple[str, str]]:
    """(runtime, mode) pairs to build: every mode of each runtime, or the requested subset."""
    pairs = [(rt, m) for rt in options.runtimes for m in QUANT_MODES[rt]]
    if not options.modes:
        return pairs
    wanted = set(options.modes)
    known = {m for _, m in pairs} | {f"{rt}/{m}" for rt, m in pairs}
    unknown = sorted(wanted - known)
    if unknown:
        raise EdgenasError(f"unknown mode {unknown[0]!r} (modes: {', '.join(sorted({m for _, m in pairs}))}, or runtime/mode)")
    return [(rt, m) for rt, m in pairs if m in wanted or f"{rt}/{m}" in wanted]


def model_inputs(model_dir: Path) -> tuple[int, dict[str, Path]]:
    """Sequence length and data files of an `edgenas export` directory."""
    metrics_path = model_dir / "metrics.json"
    if not metrics_path.is_file():
        raise EdgenasError(f"{model_dir}: no metrics.json (not an `edgenas export` model directory)")
    data = {name: model_dir / "data" / f"{name}.npz" for name in ("dev", "calibration", "parity")}
    missing = [p.name for p in data.values() if not p.is_file()]
    if missing:
        raise EdgenasError(f"{model_dir}/data lacks {', '.join(missing)}")
    return int(json.loads(metrics_path.read_text())["seq_len"]), data


def torch_logits(model_dir: Path, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Logits of the directory's transformers weights (the reference every artifact is checked against)."""
    from transformers import AutoModelForSequenceClassification

    from edgenas.search.training.loop import predict_logits

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    return predict_logits(model, arrays)


def compare_one(model_dir: Path, runtime: str, mode: str, seq_len: int, data: dict[str, Path], target,
                options: CompareOptions, reference: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Compile, time and score one runtime/mode; a failure becomes a row with its error."""
    from edgenas.compile import compile_artifact
    from edgenas.runtime.runners import load_runner
    from edgenas.search.study.trial import compile_cache_dir, load_npz

    row: dict[str, Any] = {"runtime": runtime, "mode": mode}
    try:
        artifact = compile_artifact(model_dir, runtime, mode, seq_len=seq_len, calibration=data["calibration"],
                                    check_data=data["parity"], cache_dir=compile_cache_dir())
        measured = target.measure(artifact.path, data["dev"], threads=options.threads, warmup=options.warmup,
                                  runs=options.runs)
    except EdgenasError as exc:
        return {**row, "status": "failed", "error": str(exc).splitlines()[0]}
    arrays = load_npz(data["dev"])
    arrays.pop("labels")
    logits = load_runner(artifact.path, threads=options.threads).predict_logits(arrays)
    row |= {k: measured[k] for k in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms")}
    row |= {"status": "ok", "throughput_per_s": 1000.0 / measured["median_ms"], "size_mb": artifact.meta["size_bytes"] / 1e6,
            "dev_accuracy": measured["accuracy"], "torch_accuracy": float((reference.argmax(-1) == labels).mean()),
            "torch_agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
            "max_abs_logit_diff": float(np.abs(logits - reference).max()), "device": measured.get("device"),
            "artifact": str(artifact.path)}
    return row


def compare_model(model_dir: Path, options: CompareOptions, progress=None) -> list[dict[str, Any]]:
    """One row per runtime/mode: latency distribution, throughput, size, dev accuracy, agreement with torch."""
    from edgenas.runtime.targets import target_from_url
    from edgenas.search.study.runner import quiet_libraries
    from edgenas.search.study.trial import load_npz

    quiet_libraries()
    model_dir = Path(model_dir)
    seq_len, data = model_inputs(model_dir)
    pairs = plan(options)
    target = target_from_url(options.target)
    arrays = load_npz(data["dev"])
    labels = arrays.pop("labels")
    reference = torch_logits(model_dir, arrays)
    rows = []
    for runtime, mode in pairs:
        rows.append(compare_one(model_dir, runtime, mode, seq_len, data, target, options, reference, labels))
        if progress is not None:
            progress(rows[-1])
    return rows


def write_outputs(rows: list[dict[str, Any]], out_dir: Path, title: str) -> list[Path]:
    """compare.csv, compare.png (matplotlib) and compare.html (plotly): latency distribution vs accuracy."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "compare.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    return [csv_path, _png(ok, out_dir / "compare.png", title), _html(ok, out_dir / "compare.html", title)]


_XLABEL = "latency, batch 1 (ms): dot median, thick bar to p90, line to p99"


def _png(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Left: each mode's latency distribution (median, p90, p99); right: dev accuracy vs median latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (dist, acc) = plt.subplots(1, 2, figsize=(12, max(4.0, 0.4 * len(rows) + 1.5)))
    colours = {"tflite": "tab:blue", "onnxruntime": "tab:orange"}
    for y, r in enumerate(rows):
        colour = colours[r["runtime"]]
        dist.plot([r["median_ms"], r["p99_ms"]], [y, y], color=colour, lw=1)
        dist.plot([r["median_ms"], r["p90_ms"]], [y, y], color=colour, lw=5, solid_capstyle="butt")
        dist.plot(r["median_ms"], y, "o", color="black", ms=4)
        acc.scatter(r["median_ms"], r["dev_accuracy"], color=colour, marker="o" if r["runtime"] == "tflite" else "s")
        acc.annotate(r["mode"], (r["median_ms"], r["dev_accuracy"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    dist.set_yticks(range(len(rows)), [f"{r['runtime']}/{r['mode']}" for r in rows], fontsize=8)
    dist.invert_yaxis()
    dist.set_xlabel(_XLABEL)
    acc.set_xlabel("median latency, batch 1 (ms)")
    acc.set_ylabel("dev accuracy (through the runtime)")
    for ax in (dist, acc):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _html(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    import plotly.graph_objects as go

    fig = go.Figure()
    for runtime in ("tflite", "onnxruntime"):
        sub = [r for r in rows if r["runtime"] == runtime]
        if not sub:
            continue
        fig.add_trace(go.Scatter(
            x=[r["median_ms"] for r in sub], y=[r["dev_accuracy"] for r in sub], mode="markers+text", name=runtime,
            text=[r["mode"] for r in sub], textposition="top center",
            error_x={"type": "data", "symmetric": False, "array": [r["p99_ms"] - r["median_ms"] for r in sub],
                     "arrayminus": [0.0] * len(sub)},
            customdata=[[r["p90_ms"], r["p99_ms"], r["throughput_per_s"], r["size_mb"], r["torch_agreement"]] for r in sub],
            hovertemplate=("%{text}<br>median %{x:.3f} ms, p90 %{customdata[0]:.3f}, p99 %{customdata[1]:.3f}<br>"
                           "%{customdata[2]:.1f} examples/s (batch 1), %{customdata[3]:.2f} MB<br>"
                           "accuracy %{y:.4f}, agreement with torch %{customdata[4]:.3f}<extra></extra>"),
        ))
    fig.update_layout(title=title, xaxis_title="median latency, batch 1 (ms); bar to p99",
                      yaxis_title="dev accuracy (through the runtime)")
    fig.write_html(str(path), include_plotlyjs="directory")
    return path
