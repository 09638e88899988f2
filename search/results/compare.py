"""`edgenas compare`: one exported model through every runtime of the backend catalog, in every mode.

Each mode is compiled from the directory's transformers weights, timed on the
target (batch 1, so throughput = 1000 / median ms examples per second), scored
on the directory's dev set through the runtime, and checked against torch.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Group
from rich.text import Text

from edgenas.errors import EdgenasError
from edgenas.tables import RUNTIME_CODES, narrow_table, number_column, runtime_mode, text_column
from edgenas.runtime.backends import BACKENDS, get_backend
from edgenas.runtime.tasks import CLASSIFICATION, Task, get_task, task_of_model

if TYPE_CHECKING:
    from edgenas.runtime.targets import Target

COLUMNS = ("runtime", "mode", "status", "median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput_per_s",
           "size_mb", "dev_accuracy", "torch_accuracy", "torch_agreement", "max_abs_logit_diff", "exact_match",
           "ms_per_question", "error")


@dataclass
class CompareOptions:
    """The `edgenas compare` flags."""

    target: str = "local"
    modes: list[str] | None = None  # mode names, or runtime/mode; None: the modes a search samples; ["all"]: every one
    runtimes: tuple[str, ...] = tuple(BACKENDS)
    threads: int = 1
    warmup: int = 5
    runs: int = 50
    out_dir: Path | None = None  # default: MODEL_DIR/compare
    questions: int | None = None  # QA: score on this many seeded dev questions, not the export's own

    def output_dir(self, model_dir: Path) -> Path:
        """Where the tables, plots and rebuilt dev sets go."""
        return self.out_dir or Path(model_dir) / "compare"


def plan(options: CompareOptions) -> list[tuple[str, str]]:
    """(runtime, mode) pairs to build: the modes a search samples by default, every mode ("all"), or a subset."""
    pairs = [(rt, m) for rt in options.runtimes for m in get_backend(rt).mode_names]
    if not options.modes:
        return [(rt, m.name) for rt in options.runtimes for m in get_backend(rt).modes if m.searched]
    if options.modes == ["all"]:
        return pairs
    wanted = set(options.modes)
    known = {name for rt, m in pairs for name in _names(rt, m)}
    unknown = sorted(wanted - known)
    if unknown:
        raise EdgenasError(f"unknown mode {unknown[0]!r} (modes: {', '.join(sorted({m for _, m in pairs}))}, or runtime/mode)")
    return [(rt, m) for rt, m in pairs if wanted & _names(rt, m)]


def _names(runtime: str, mode: str) -> set[str]:
    """What --modes accepts for one pair: the mode, runtime/mode, and the tables' short runtime/mode."""
    return {mode, f"{runtime}/{mode}", runtime_mode(runtime, mode)}


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


def question_set(model_dir: Path, questions: int, directory: Path) -> Path:
    """A QA model's dev set rebuilt at `questions` seeded dev questions (all of them if dev has fewer) the way
    its export built it (`export.write_data`): the export's config, tokenizer, window length and seed."""
    from importlib import import_module

    from transformers import AutoTokenizer

    from edgenas.config import SearchConfig

    if not task_of_model(model_dir).spans:
        raise EdgenasError(f"{model_dir}: --questions is for QA models (a classifier is scored on all of dev)")
    metrics = json.loads((model_dir / "metrics.json").read_text())
    config = SearchConfig.model_validate(metrics["config"])
    splits, _ = import_module(config.task.record.data_module).load_splits(config)
    rows = splits.export_rows(questions, config.task.split_seed)
    dev = splits.scored_set("dev", AutoTokenizer.from_pretrained(str(model_dir)), int(metrics["seq_len"]), rows)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "dev.npz", **dev)
    return directory / "dev.npz"


def compare_one(model_dir: Path, runtime: str, mode: str, seq_len: int, data: dict[str, Path], target: Target,
                options: CompareOptions, reference: np.ndarray, torch_accuracy: float) -> dict[str, Any]:
    """Compile, time and score one runtime/mode; a failure becomes a row with its error."""
    from edgenas.compile import compile_artifact
    from edgenas.search.study.trial import compile_cache_dir

    row: dict[str, Any] = {"runtime": runtime, "mode": mode}
    try:
        artifact = compile_artifact(model_dir, runtime, mode, seq_len=seq_len, calibration=data["calibration"],
                                    check_data=data["parity"], cache_dir=compile_cache_dir())
        # the logits come back with the measurement: scored once, on the target, at batch 1 like the accuracy
        measured = target.measure(artifact.path, data["dev"], threads=options.threads, warmup=options.warmup,
                                  runs=options.runs, logits=True, score_jobs=0)
    except EdgenasError as exc:
        return {**row, "status": "failed", "error": str(exc).splitlines()[0]}
    logits = np.asarray(measured.logits, dtype=np.float32)
    row |= {name: getattr(measured, name) for name in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms")}
    row |= {"status": "ok", "throughput_per_s": 1000.0 / measured.median_ms, "size_mb": artifact.meta["size_bytes"] / 1e6,
            "dev_accuracy": measured.accuracy, "torch_accuracy": torch_accuracy,
            **{name: getattr(measured, name) for name in ("exact_match", "ms_per_question")
               if getattr(measured, name) is not None},
            "torch_agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
            "max_abs_logit_diff": float(np.abs(logits - reference).max()), "device": measured.device,
            "artifact": str(artifact.path)}
    return row


def compare_model(model_dir: Path, options: CompareOptions, on_row=None, progress: bool = False) -> list[dict[str, Any]]:
    """One row per runtime/mode: latency distribution, throughput, size, dev accuracy, agreement with torch.

    on_row(row) is called as each row is done; progress shows a bar over the rows, naming the one being built.
    """
    from edgenas.runtime.targets import target_from_url
    from edgenas.search.study.runner import quiet_libraries
    from edgenas.search.study.trial import load_npz
    from edgenas.search.training.loop import progress_bar

    quiet_libraries()
    model_dir = Path(model_dir)
    seq_len, data = model_inputs(model_dir)
    pairs = plan(options)
    if options.questions is not None:
        directory = options.output_dir(model_dir) / f"dev-{options.questions}-questions"
        data["dev"] = question_set(model_dir, options.questions, directory)
    target = target_from_url(options.target)
    from edgenas.compile.torch_model import reference_logits
    from edgenas.runtime.measure import score_logits

    arrays = load_npz(data["dev"])
    reference = reference_logits(model_dir, arrays)  # full width, like the artifacts' logits
    torch_accuracy = score_logits(reference, arrays)["accuracy"]
    rows, task_name = [], task_of_model(model_dir).name
    with progress_bar(progress) as bar:
        task = bar.add_task("compare", total=len(pairs), info="")
        for runtime, mode in pairs:
            bar.update(task, description=runtime_mode(runtime, mode), info="build, check, time")
            why = get_backend(runtime).missing()
            rows.append({"task": task_name, **({"runtime": runtime, "mode": mode, "status": "skipped", "error": why}
                         if why else compare_one(model_dir, runtime, mode, seq_len, data, target, options, reference,
                                                 torch_accuracy))})
            if on_row is not None:
                on_row(rows[-1])
            bar.advance(task)
    return rows


def task_of_rows(rows: list[dict[str, Any]]) -> Task:
    """The task of the model the rows measure (rows written before rows named it: a classifier's)."""
    return get_task(rows[0].get("task", "classification")) if rows else CLASSIFICATION


def compare_table(rows: list[dict[str, Any]], title: str) -> Group:
    """One line per runtime/mode, in 80 columns, and a note; a failed mode says so under the median."""
    task = task_of_rows(rows)
    numbers = task.compare_columns
    table = narrow_table(title)
    text_column(table, "runtime/mode")
    for column in numbers:
        number_column(table, column.heading, column.width)
    for r in rows:
        if r["status"] != "ok":
            table.add_row(runtime_mode(r["runtime"], r["mode"]), r["status"], *[""] * (len(numbers) - 1))
            continue
        table.add_row(runtime_mode(r["runtime"], r["mode"]), *(c.format.format(r[c.key]) for c in numbers))
    return Group(table, Text(task.compare_note))


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
#: colour and marker of each runtime in compare.png, in catalog order
RUNTIME_STYLE = dict(zip(BACKENDS, zip(("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"),
                                       ("o", "s", "^", "D", "v"))))
#: least distance between two mode labels beside the accuracy panel, in axes fraction (a 9 pt line and a half)
LABEL_GAP = 0.06


def _png(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """compare.png: the compare figure at 120 dpi."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = compare_figure(rows, title)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # tight: keeps the labels beside the right panel
    plt.close(fig)
    return path


def compare_figure(rows: list[dict[str, Any]], title: str) -> Any:
    """Left: each mode's latency distribution (median, p90, p99); right: dev accuracy vs median latency.

    Colours are the runtimes, named in a legend under the panels.
    """
    import matplotlib.pyplot as plt

    fig, (dist, acc) = plt.subplots(1, 2, figsize=(12, max(4.5, 0.35 * len(rows) + 2.5)), layout="constrained")
    _latency_panel(dist, rows)
    _accuracy_panel(acc, rows)
    runtimes = [rt for rt in RUNTIME_STYLE if any(r["runtime"] == rt for r in rows)]
    if runtimes:
        fig.legend(handles=[_runtime_handle(rt) for rt in runtimes], loc="outside lower center", ncol=len(runtimes))
    fig.suptitle(title)
    return fig


def _runtime_handle(runtime: str) -> Any:
    """The legend entry of one runtime: its colour and marker."""
    from matplotlib.lines import Line2D

    colour, marker = RUNTIME_STYLE[runtime]
    code = RUNTIME_CODES.get(runtime, runtime)
    return Line2D([], [], color=colour, marker=marker, lw=5, label=runtime if code == runtime else f"{code} ({runtime})")


def _latency_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """One row per runtime/mode: a dot at the median, a thick bar to p90 and a line to p99."""
    for y, r in enumerate(rows):
        colour = RUNTIME_STYLE[r["runtime"]][0]
        ax.plot([r["median_ms"], r["p99_ms"]], [y, y], color=colour, lw=1)
        ax.plot([r["median_ms"], r["p90_ms"]], [y, y], color=colour, lw=5, solid_capstyle="butt")
        ax.plot(r["median_ms"], y, "o", color="black", ms=4)
    ax.set_yticks(range(len(rows)), [runtime_mode(r["runtime"], r["mode"]) for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(_XLABEL)
    ax.grid(alpha=0.3)


def _accuracy_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Dev accuracy against median latency; each point's mode is named in a column to the right of the panel."""
    for r in rows:
        colour, marker = RUNTIME_STYLE[r["runtime"]]
        ax.scatter(r["median_ms"], r["dev_accuracy"], color=colour, marker=marker, zorder=3)
    # modes often share an accuracy and nearly a latency, so labels beside their points would overlap:
    # they stand in a column right of the panel, each as level with its point as the others allow
    by_height = sorted(rows, key=lambda r: (r["dev_accuracy"], -r["median_ms"]))  # ties: leftmost point highest
    low, high = ax.get_ylim()
    heights = [(r["dev_accuracy"] - low) / (high - low) for r in by_height]
    for r, y in zip(by_height, spread(heights, gap=min(LABEL_GAP, 1 / max(len(rows), 1)))):
        ax.annotate(r["mode"], (r["median_ms"], r["dev_accuracy"]), xytext=(1.03, y), textcoords="axes fraction",
                    va="center", fontsize=9, color=RUNTIME_STYLE[r["runtime"]][0],
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6, "shrinkA": 2, "shrinkB": 4})
    ax.set_xlabel("median latency, batch 1 (ms)")
    ax.set_ylabel(task_of_rows(rows).scored_label)
    ax.grid(alpha=0.3)


def spread(heights: list[float], gap: float) -> list[float]:
    """Label heights (axes fraction, ascending) moved the least so that they are `gap` apart within 0-1."""
    placed: list[float] = []
    for y in heights:  # push up past the label below
        placed.append(max(y, placed[-1] + gap) if placed else max(y, gap / 2))
    top = 1 - gap / 2
    for i in reversed(range(len(placed))):  # then down, below the top and the label above
        placed[i] = min(placed[i], top if i == len(placed) - 1 else placed[i + 1] - gap)
    return placed


def _html(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    import plotly.graph_objects as go

    fig = go.Figure()
    for runtime in BACKENDS:
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
                      yaxis_title=task_of_rows(rows).scored_label)
    fig.write_html(str(path), include_plotlyjs="directory")
    return path
