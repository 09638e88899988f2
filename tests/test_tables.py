"""The terminal tables fit 80 columns (a pipe's width too): no cell elided, numbers and mode names whole."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from rich.console import Console, RenderableType

from edgenas.cli import bench_table
from edgenas.config import SearchConfig
from edgenas.runtime.tasks import CLASSIFICATION
from edgenas.runtime.measurement import Measurement
from edgenas.search.results.compare import CompareOptions, compare_table, plan, spread
from edgenas.search.results.report import Report, reference_point, terminal_summary, trial_row
from edgenas.search.study.objectives import FAIL_ATTR, RESULT_ATTR, objective_values, pareto_trials
from edgenas.search.study.storage import open_study
from edgenas.search.study import verdict
from edgenas.search.study.runner import pareto_table, trial_line
from edgenas.types import ArchConfig, Candidate, arch_legend
from tiny_project import trial_result

#: the widest candidates: the longest modes of both runtimes, bottleneck and BERT-style architectures,
#: three-digit latencies and sizes
FRONT = [
    (ArchConfig(24, 512, 128, 4, 4, 512, 128), "onnxruntime", "dynamic_int8_per_channel", 128, 0.8123, 123.456, 155.5, 124.56),
    (ArchConfig(6, 384, 384, 12, 1, 1536, 384), "onnxruntime", "static_int8_percentile", 64, 0.7901, 3.21, 4.0, 22.8),
    (ArchConfig(4, 256, 64, 2, 2, 256, 128), "tflite", "full_int8", 32, 0.70, 0.85, 1.1, 4.1),
]
BASELINES = {"n_dev": 500, "n_test": 1000, "tfidf_c": 1.0, "majority": {"dev": 0.41, "test": 0.4},
             "tfidf": {"dev": 0.76, "test": 0.77}}
LEGEND = "arch: L layers, H hidden, B bottleneck, A heads, F FFNs, I FFN dim, E embedding"


def add_front(study: optuna.Study, config: SearchConfig) -> None:
    """FRONT as completed trials (each on the front), then one failed trial."""
    for arch, runtime, mode, seq_len, accuracy, median, p90, size in FRONT:
        trial = study.ask()
        result = trial_result(accuracy, median, size, torch_accuracy=accuracy + 0.001, p90_ms=p90, p99_ms=p90 + 1)
        trial.set_user_attr("candidate", Candidate(arch, runtime=runtime, quantization=mode, seq_len=seq_len).to_dict())
        trial.set_user_attr(RESULT_ATTR, result.to_attrs())
        study.tell(trial, objective_values(config, result))
    failed = study.ask()
    failed.set_user_attr("candidate", Candidate(FRONT[0][0], quantization="static_int8_minmax").to_dict())
    failed.set_user_attr(FAIL_ATTR, "compile failed: [onnx] the quantizer ran out of memory on the 24-layer model")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    study.set_user_attr(verdict.BASELINES_ATTR, BASELINES)


@pytest.fixture
def front() -> tuple[optuna.Study, SearchConfig]:
    config = SearchConfig()
    study = optuna.create_study(study_name="edgenas-demo", directions=config.directions())
    add_front(study, config)
    return study, config


def render(renderable: RenderableType | str, width: int = 80) -> str:
    """What a terminal `width` columns wide shows."""
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(renderable, highlight=False)
    return console.export_text()


def assert_fits(text: str, width: int = 80) -> None:
    assert "…" not in text and "..." not in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width


def test_pareto_table_shows_every_mode_and_number_in_80_columns(front) -> None:
    text = render(pareto_table(*front))
    assert_fits(text)
    for arch, runtime, mode, *_ in FRONT:
        assert arch.short() in text and f"{'onnx' if runtime == 'onnxruntime' else runtime}/{mode}" in text
    for figure in ("123.46", "155.50", "124.56", "0.812±0.034", "0.813", "128", "0.85", "4.10"):
        assert figure in text
    assert LEGEND in text.splitlines()
    assert "baselines on the same 500 dev examples" in text


def test_pareto_table_without_baselines_line(front) -> None:
    text = render(pareto_table(*front, baselines=False))
    assert "baselines" not in text and LEGEND in text


def test_arch_legend_names_only_the_letters_in_use() -> None:
    assert arch_legend(["L6-H384-A12-I1536-E384"]) == "arch: L layers, H hidden, A heads, I FFN dim, E embedding"
    assert arch_legend(["L6-H384-A12-I1536-E384", "L4-H256-B64-A2-F2-I256-E128"]) == LEGEND
    assert len(LEGEND) <= 80


def test_trial_lines_break_between_candidate_and_figures(front) -> None:
    study, _ = front
    text = render("\n".join(trial_line(study, t, 80) for t in study.trials))
    assert_fits(text)
    assert "#0   L24-H512-B128-A4-F4-I512-E128 onnx/dynamic_int8_per_channel seq128 t1\n" in text
    assert "\n     acc 0.812±0.034 | 123.46 ms | 124.6 MB  pareto\n" in text
    assert "failed: compile failed: [onnx] the quantizer" in text  # the reason's brackets are not markup
    wide = render(trial_line(study, study.trials[2], 200), width=200)
    assert "tflite/full_int8 seq32 t1 | acc 0.700±0.040 | 0.85 ms | 4.1 MB  pareto" in wide


def compare_rows() -> list[dict]:
    """A row per runtime/mode with three-digit latencies; one failed."""
    rows = []
    for i, (runtime, mode) in enumerate(plan(CompareOptions())):
        median = 100.0 + 10.123 * i
        rows.append({"runtime": runtime, "mode": mode, "status": "ok", "median_ms": median, "p90_ms": median + 1,
                     "p99_ms": median + 2, "throughput_per_s": 1000 / median, "size_mb": 104.5, "dev_accuracy": 0.8123,
                     "torch_agreement": 0.987})
    rows[2] = {"runtime": rows[2]["runtime"], "mode": rows[2]["mode"], "status": "failed", "error": "boom"}
    return rows


def test_compare_table_shows_every_mode_and_number_in_80_columns() -> None:
    rows = compare_rows()
    text = render(compare_table(rows, "trial-12-onnxruntime-dynamic_int8_per_channel"))
    assert_fits(text)
    lines = text.splitlines()
    assert CLASSIFICATION.compare_note in lines and len(CLASSIFICATION.compare_note) <= 80
    for r in rows:
        code = f"{'onnx' if r['runtime'] == 'onnxruntime' else r['runtime']}/{r['mode']}"
        row = next(line for line in lines if line.startswith(code + " "))  # one line per mode, name whole
        if r["status"] == "ok":
            assert f"{r['median_ms']:.3f} {r['p90_ms']:.3f} {r['p99_ms']:.3f}" in row
            assert row.rstrip().endswith("104.50 0.8123 0.987")
        else:
            assert "failed" in row


def test_compare_accepts_the_tables_short_runtime_names() -> None:
    assert plan(CompareOptions(modes=["onnx/fp16"])) == [("onnxruntime", "fp16")]


def test_bench_table_fits_80_columns() -> None:
    result = Measurement.from_json({
        "device": "raspberrypi (Cortex-A76 quad-core 2.4 GHz ARMv8 Processor rev 1 (v8l))", "median_ms": 123.456,
        "p90_ms": 130.1, "p99_ms": 151.02, "mean_ms": 125.5, "std_ms": 5.2, "min_ms": 120.0, "cv": 0.0412,
        "median_ci95": 0.01, "runs": 50, "warmup": 10, "noisy": False, "peak_rss_mb": 1180.25, "accuracy": 0.8123,
        "n_eval": 500, "runtime": "onnxruntime", "threads": 4, "graph_optimization": "extended", "seq_len": 128,
        "artifact": "model.onnx", "artifact_mb": 20.1, "load_ms": 80.0})
    text = render(bench_table(Path("model-dynamic_int8_per_channel-seq128.onnx"), result))
    assert_fits(text)
    for figure in ("123.5", "1180", "0.0412", "onnxruntime", "extended"):
        assert figure in text


def test_report_prints_the_front_as_a_table_that_fits(front) -> None:
    study, config = front
    report = Report(Path("unused"), pareto=[trial_row(t) for t in pareto_trials(study)],
                    reference=reference_point(study, config.objectives))
    text = render(terminal_summary(study, config, report))
    assert_fits(text)
    assert "3 completed trials, 1 failed" in text and "Pareto front of edgenas-demo" in text
    assert "onnx/dynamic_int8_per_channel" in text and LEGEND in text.splitlines()
    assert "| trial |" not in text  # the markdown table is for summary.md only


def test_spread_keeps_labels_apart_and_inside() -> None:
    assert spread([0.2, 0.5], gap=0.1) == [0.2, 0.5]
    placed = spread([0.99, 0.99, 0.99], gap=0.1)
    assert placed == pytest.approx([0.75, 0.85, 0.95])
    assert spread([0.0, 0.0], gap=0.1) == pytest.approx([0.05, 0.15])


@pytest.mark.slow
@pytest.mark.parametrize("columns", [None, "80"])
def test_piped_report_is_complete(tmp_path: Path, columns: str | None) -> None:
    """Piped, rich lays out for 80 columns (or $COLUMNS): the report's table still shows everything."""
    url = f"sqlite:///{tmp_path / 'edgenas.db'}"
    config = SearchConfig()
    add_front(open_study(optuna.storages.RDBStorage(url), "piped", config, optuna.samplers.RandomSampler()), config)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env |= {"COLUMNS": columns} if columns else {}
    done = subprocess.run([sys.executable, "-m", "edgenas.cli", "report", "--study", "piped", "--storage", url,
                           "--out", str(tmp_path / "report")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    table = done.stdout[done.stdout.index("Pareto front of piped"):done.stdout.index("wrote ")]
    assert_fits(table)
    assert "onnx/dynamic_int8_per_channel" in table and "123.46" in table and LEGEND in table.splitlines()


def test_compare_png_has_a_runtime_legend_and_labels_apart() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from edgenas.search.results.compare import compare_figure

    rows = [r for r in compare_rows() if r["status"] == "ok"]
    for r in rows:  # modes that tie on accuracy and nearly on latency: labels beside the points would collide
        r["dev_accuracy"], r["median_ms"] = 0.8 + (r["mode"] == "fp32") / 1000, 3.0 + len(r["mode"]) / 1000
        r["p90_ms"], r["p99_ms"] = r["median_ms"] + 0.2, r["median_ms"] + 0.5
    fig = compare_figure(rows, "tiny on local")
    fig.canvas.draw()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["tflite", "onnx (onnxruntime)", "executorch"]
    labels = fig.axes[1].texts
    assert sorted(t.get_text() for t in labels) == sorted(r["mode"] for r in rows)
    boxes = [Text.get_window_extent(t) for t in labels]  # the text alone: an Annotation's box takes in its line
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def test_a_noisy_latency_is_marked_and_explained(front) -> None:
    study, config = front
    assert "~" not in render(pareto_table(study, config))
    trial = study.ask()
    arch, runtime, mode, seq_len, *_ = FRONT[2]
    result = trial_result(0.71, 0.5, 4.0, p90_ms=0.6, p99_ms=0.7, noisy=True, median_ci95=0.05)
    trial.set_user_attr("candidate", Candidate(arch, runtime=runtime, quantization=mode, seq_len=seq_len).to_dict())
    trial.set_user_attr(RESULT_ATTR, result.to_attrs())
    study.tell(trial, objective_values(config, result))
    text = render(pareto_table(study, config))
    assert_fits(text)
    assert " 0.50~ " in text and "~ latency still uncertain" in text
    assert "0.50~ ms" in trial_line(study, study.trials[-1])
