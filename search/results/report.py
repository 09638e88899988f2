"""`edgenas report`: a study's Pareto front, hypervolume history, importances and tables.

Interactive plots are Optuna's plotly figures saved as HTML; the PNGs come from
optuna.visualization.matplotlib (plotly's PNG export needs Chrome via kaleido).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Group
from rich.text import Text

from edgenas.config import OBJECTIVES, SearchConfig
from edgenas.errors import EdgenasError
from edgenas.search.study.objectives import REFERENCE_MARGIN, RESULT_ATTR, pareto_trials, reference_point, result_of
from edgenas.search.study.storage import ARTIFACTS_ATTR, default_storage, open_storage, redact, sqlite_file
from edgenas.search.study import verdict
from edgenas.types import Candidate

DEFAULT_OUT = Path("edgenas-out")


# ---------------------------------------------------------------- opening a finished study


def storage_url(storage: str | None, out_dir: Path = DEFAULT_OUT) -> str:
    """The given URL, else the search's default SQLite file, which must already exist."""
    if storage:
        return storage
    db = out_dir / "edgenas.db"
    if not db.is_file():
        raise EdgenasError(f"no study storage at {db}: run `edgenas search` first, or pass --from DIR "
                           f"(the search's --out) or --storage URL")
    return default_storage(out_dir)


def load_study(study_name: str, storage: str | None = None) -> tuple[optuna.Study, SearchConfig]:
    """An existing study and the SearchConfig it was run with."""
    url = storage_url(storage)
    rdb = open_storage(url, must_exist=True)
    try:
        study = optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        names = ", ".join(optuna.get_all_study_names(rdb)) or "none"
        raise EdgenasError(f"no study '{study_name}' in {redact(url)} (studies: {names})") from None
    raw = study.user_attrs.get("config")
    if raw is None:
        raise EdgenasError(f"study '{study_name}' was not made by `edgenas search` (no config recorded)")
    return study, SearchConfig.model_validate_json(raw)


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that carry a measurement record."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if RESULT_ATTR in t.user_attrs]


def artifact_dir(study: optuna.Study, storage: str | None = None) -> Path | None:
    """The study's artifact store: recorded at search time, else `artifacts` beside an SQLite storage."""
    recorded = study.user_attrs.get(ARTIFACTS_ATTR)
    if recorded:
        return Path(recorded)
    database = sqlite_file(storage_url(storage))
    return database.parent / "artifacts" if database is not None else None


def dashboard_command(study: optuna.Study, storage: str | None = None) -> str:
    """The optuna-dashboard command line for the study's storage and artifact store (password hidden)."""
    import shlex

    command = f"optuna-dashboard {shlex.quote(redact(storage_url(storage)))}"
    artifacts = artifact_dir(study, storage)
    return command + (f" --artifact-dir {shlex.quote(str(artifacts))}" if artifacts else "")


# ---------------------------------------------------------------- tables


PARETO_COLUMNS = ("trial", "architecture", "runtime", "mode", "seq_len", "threads", "accuracy", "accuracy_ci95",
                  "accuracy_n", "torch_accuracy", "median_ms", "p90_ms", "p99_ms", "ms_per_question", "size_mb", "params")


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as a flat record: candidate choices and measured figures."""
    c = Candidate.from_dict(trial.user_attrs["candidate"])
    r = result_of(trial)
    m = r.measurement
    return {"trial": trial.number, "architecture": c.arch.short(), "runtime": c.runtime, "mode": c.quantization,
            "seq_len": c.seq_len, "threads": c.threads, "accuracy": r.accuracy,
            "accuracy_ci95": "-".join(f"{x:.3f}" for x in r.accuracy_ci95), "accuracy_n": r.accuracy_n,
            "torch_accuracy": r.torch_accuracy, "median_ms": m.median_ms, "p90_ms": m.p90_ms, "p99_ms": m.p99_ms,
            "ms_per_question": m.ms_per_question, "size_mb": r.size_mb,
            "params": {k: v for k, v in trial.params.items()}}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """A GitHub markdown table of the given columns."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plots


@dataclass
class Report:
    """What `write_report` produced."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    pareto: list[dict[str, Any]] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)
    #: the latency predictor on held-out trials, per backend and overall (share within ±10/±20 %, Spearman)
    predictor: dict[str, dict[str, float]] = field(default_factory=dict)


def _plots(study: optuna.Study, objectives: list[str]) -> dict[str, tuple[Callable, dict[str, Any]]]:
    """Name -> (optuna plot function name, kwargs), shared by the plotly and matplotlib back-ends."""
    index = {name: i for i, name in enumerate(objectives)}
    names = [{"accuracy": "dev accuracy", "latency": "median latency (ms)", "size": "size (MB)"}[o] for o in objectives]
    plots: dict[str, tuple[Callable, dict[str, Any]]] = {}
    if "accuracy" in index and "latency" in index:
        # accuracy vs latency; size (if an objective) goes into the hover text via the full trial record
        pair = [index["latency"], index["accuracy"]]
        plots["pareto_front"] = ("plot_pareto_front", {
            "targets": lambda t, p=pair: tuple(t.values[i] for i in p),
            "target_names": [names[i] for i in pair]})
    elif len(objectives) in (2, 3):
        plots["pareto_front"] = ("plot_pareto_front", {"target_names": names})
    if len(objectives) > 1:
        plots["hypervolume_history"] = ("plot_hypervolume_history", {"reference_point": reference_point(study, objectives)})
    for name, i in index.items():
        plots[f"param_importances_{name}"] = ("plot_param_importances", {
            "target": lambda t, i=i: t.values[i], "target_name": names[i]})
        plots[f"optimization_history_{name}"] = ("plot_optimization_history", {
            "target": lambda t, i=i: t.values[i], "target_name": names[i]})
    return plots


def _short_hover(trial: FrozenTrial) -> str:
    row = trial_row(trial)
    return (f"#{row['trial']} {row['architecture']}<br>{row['runtime']}/{row['mode']} seq{row['seq_len']}<br>"
            f"accuracy {row['accuracy']:.4f}, median {row['median_ms']:.3f} ms, p90 {row['p90_ms']:.3f} ms<br>"
            f"size {row['size_mb']:.3f} MB")


def size_hover(figure: Any, study: optuna.Study) -> None:
    """Colour Optuna's Pareto scatter by artifact size and shorten its hover text to the figures that matter."""
    import json

    by_number = {t.number: t for t in completed(study)}
    sizes = [result_of(t).size_mb for t in by_number.values()]
    first = True
    for trace in figure.data:
        texts = trace.text  # Optuna puts each trial's JSON record here and shows it via hovertemplate
        if not texts:
            continue
        numbers = [json.loads(text.replace("<br>", "\n"))["number"] for text in texts]
        trials = [by_number[n] for n in numbers]
        trace.text = [_short_hover(t) for t in trials]
        trace.marker.color = [result_of(t).size_mb for t in trials]
        # one shared colour scale; one colour bar for all traces
        trace.marker.update(colorscale="Viridis", cmin=min(sizes), cmax=max(sizes), showscale=first,
                            colorbar={"title": {"text": "size (MB)"}})
        first = False


def pareto_figure(study: optuna.Study) -> Any:
    """Matplotlib accuracy-vs-latency scatter coloured by size; Pareto trials outlined and labelled."""
    import matplotlib.pyplot as plt

    trials = completed(study)
    front = {t.number for t in pareto_trials(study)}
    rows = [trial_row(t) for t in trials]
    qa = any(r["ms_per_question"] is not None for r in rows)
    latency = [r["ms_per_question"] if qa else r["median_ms"] for r in rows]  # what the study minimises
    fig, ax = plt.subplots(figsize=(8, 5))
    points = ax.scatter(latency, [r["accuracy"] for r in rows], c=[r["size_mb"] for r in rows],
                        cmap="viridis", s=[70 if r["trial"] in front else 25 for r in rows],
                        edgecolors=["black" if r["trial"] in front else "none" for r in rows])
    for r, x in zip(rows, latency):
        if r["trial"] in front:
            ax.annotate(f"#{r['trial']} {r['runtime']}/{r['mode']}", (x, r["accuracy"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
    fig.colorbar(points, ax=ax, label="size (MB)")
    ax.set_xlabel("latency per question (all its windows), batch 1 (ms)" if qa else "median latency, batch 1 (ms)")
    ax.set_ylabel("dev F1, SQuAD v1.1 (through the runtime)" if qa else "dev accuracy (through the runtime)")
    ax.set_title(f"{study.study_name}: Pareto front outlined")
    ax.grid(alpha=0.3)
    return fig


def write_plots(study: optuna.Study, objectives: list[str], out_dir: Path, report: Report) -> None:
    """Each plot as plotly HTML and matplotlib PNG; a plot that cannot be drawn is recorded, not fatal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vis_mpl

    for name, (function, kwargs) in _plots(study, objectives).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib back-end experimental
            try:
                figure = getattr(vis, function)(study, **kwargs)
                if name == "pareto_front":
                    size_hover(figure, study)
                html = out_dir / f"{name}.html"
                figure.write_html(str(html), include_plotlyjs="directory")
                report.files.append(html)
                if name == "pareto_front" and "latency" in objectives and "accuracy" in objectives:
                    fig = pareto_figure(study)
                else:
                    axes = getattr(vis_mpl, function)(study, **kwargs)
                    fig = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
                png = out_dir / f"{name}.png"
                fig.savefig(png, dpi=120, bbox_inches="tight")
                plt.close(fig)
                report.files.append(png)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                # e.g. importances need 2+ trials with varied parameters
                report.skipped[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                plt.close("all")


def write_predictor_check(study: optuna.Study, config: SearchConfig, out_dir: Path, report: Report) -> None:
    """Predicted against measured latency, each trial predicted by a model fitted on the others of its
    (backend, mode, threads, target): figures per backend and a log-log scatter (predictor.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgenas.search.space import load_space
    from edgenas.search.study.predictor import DEFAULT_VOCAB, accuracy_figures, held_out, observations

    pairs = held_out(observations(completed(study), DEFAULT_VOCAB), load_space(config.space).family,
                     config.prescreen.min_trials)
    if not pairs:
        report.skipped["predictor"] = (f"fewer than {config.prescreen.min_trials + 1} measured trials share a "
                                       "backend, mode and thread count")
        return
    report.predictor = {"all": accuracy_figures(pairs)} | {
        backend: accuracy_figures([p for p in pairs if p.backend == backend]) for backend in sorted({p.backend for p in pairs})}
    fig, ax = plt.subplots(figsize=(5, 5))
    for backend in sorted({p.backend for p in pairs}):
        mine = [p for p in pairs if p.backend == backend]
        ax.scatter([p.measured_ms for p in mine], [p.predicted_ms for p in mine], label=backend, s=18)
    low, high = min(min(p.measured_ms, p.predicted_ms) for p in pairs), max(max(p.measured_ms, p.predicted_ms) for p in pairs)
    ax.plot([low, high], [low, high], color="grey", linewidth=1)
    for band in (0.9, 1.1):
        ax.plot([low, high], [low * band, high * band], color="grey", linewidth=0.5, linestyle="--")
    ax.set(xscale="log", yscale="log", xlabel=f"measured {OBJECTIVES['latency']}",
           ylabel="predicted (fitted on the other trials)", title="latency predictor, held-out trials")
    ax.legend()
    png = out_dir / "predictor.png"
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    report.files.append(png)


def predictor_line(figures: dict[str, dict[str, float]]) -> str:
    """One sentence: the held-out latency predictor's accuracy, overall and per backend."""
    def part(f: dict[str, float]) -> str:
        return (f"{f['within_10']:.0%} within ±10 %, {f['within_20']:.0%} within ±20 %, Spearman {f['spearman']:.2f}"
                f" ({f['n']} trials)")
    per_backend = "; ".join(f"{name}: {part(f)}" for name, f in figures.items() if name != "all")
    return f"Latency predictor on held-out trials: {part(figures['all'])}" + (f" ({per_backend})" if per_backend else "")


def write_report(study: optuna.Study, config: SearchConfig, out_dir: Path) -> Report:
    """Plots (HTML + PNG), a CSV of all trials and a markdown summary of the Pareto front."""
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir)
    trials = completed(study)
    if not trials:
        raise EdgenasError(f"study '{study.study_name}' has no completed trials to report")
    logging.getLogger("optuna").setLevel(logging.ERROR)
    report.pareto = [trial_row(t) for t in pareto_trials(study)]
    if len(config.objectives) > 1:
        report.reference = reference_point(study, config.objectives)
    write_plots(study, config.objectives, out_dir, report)
    write_predictor_check(study, config, out_dir, report)
    rows = [trial_row(t) for t in trials]
    csv_path = out_dir / "trials.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PARETO_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    report.files.append(csv_path)
    summary = out_dir / "summary.md"
    summary.write_text(summary_markdown(study, config, report, len(trials)))
    report.files.append(summary)
    return report


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def summary_markdown(study: optuna.Study, config: SearchConfig, report: Report, n_completed: int) -> str:
    """The markdown summary: counts, objectives, reference point, Pareto table, plot list."""
    lines = summary_prose(study, config, report, n_completed)
    lines += ["## Pareto front (feasible, fastest first)", "", markdown_table(report.pareto, PARETO_COLUMNS[:-1]), "## Plots", ""]
    lines += [f"- [{p.name}]({p.name})" for p in report.files if p.suffix in (".html", ".png")]
    lines += [f"- {name}: not drawn ({why})" for name, why in report.skipped.items()]
    return "\n".join(lines) + "\n"


def terminal_summary(study: optuna.Study, config: SearchConfig, report: Report) -> Group:
    """The summary for a terminal: its prose, then the Pareto front as a table that fits 80 columns.

    summary.md's markdown table has every column, too many for a terminal.
    """
    from edgenas.search.study.runner import pareto_table

    prose = "\n".join(summary_prose(study, config, report, len(completed(study))))
    return Group(Text(prose), pareto_table(study, config, baselines=False))  # the prose names the baselines


def summary_prose(study: optuna.Study, config: SearchConfig, report: Report, n_completed: int) -> list[str]:
    """The summary's lines above the Pareto table: counts, objectives, baselines, warning, reference point."""
    failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    screened = f", {pruned} not compiled (the pre-screen put them behind the front)" if pruned else ""
    lines = [f"# Study {study.study_name}", "",
             f"{n_completed} completed trials{screened}, {failed} failed. Objectives: "
             + ", ".join(f"{o} ({OBJECTIVES[o]})" for o in config.objectives) + ".", "",
             f"Latency is the median of {config.measure.runs} batch-1 runs on target `{config.measure.target}`; "
             + config.task.record.report_accuracy, ""]
    baselines = study.user_attrs.get(verdict.BASELINES_ATTR)
    if baselines and baselines["n_test"]:
        lines += [_sentence(verdict.baselines_line(baselines)) + f"; on test ({baselines['n_test']} examples): "
                  + ", ".join(f"{label} {baselines[name]['test']:.3f}"
                              for name, label in verdict.baseline_names(baselines).items()) + ".", ""]
    elif baselines:
        lines += [_sentence(verdict.baselines_line(baselines)) + ".", ""]
    if report.pareto:
        best = max(report.pareto, key=lambda row: row["accuracy"])
        warning = verdict.front_warning(study, best["accuracy"], best["accuracy_n"] or 0)
        if warning:
            lines += [f"**{_sentence(warning)}.**", ""]
    if report.predictor:
        lines += [predictor_line(report.predictor) + ".", ""]
    if report.reference:
        lines += [f"Hypervolume reference point: {', '.join(f'{o}={v:.4g}' for o, v in zip(config.objectives, report.reference))} "
                  f"(accuracy 0; latency and size {REFERENCE_MARGIN}x the worst observed).", ""]
    return lines
