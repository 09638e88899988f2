"""The benchmark scripts' --quick modes: real tiny runs, checked for the fields their JSON and markdown must have."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    """An isolated cache, a shared work dir, and the quick speedup run that builds the tiny pipeline."""
    root = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGENAS_CACHE_DIR", str(root / "cache"))
        import speedup

        out = root / "out"
        argv = ["--quick", "--out", str(out), "--work", str(root / "work")]
        record = speedup.main(argv)
        yield {"root": root, "out": out, "argv": argv, "speedup": record, "mp": mp}


def _outputs(out: Path, name: str) -> tuple[dict, str]:
    record = json.loads((out / f"{name}.json").read_text())
    text = (out / f"{name}.md").read_text()
    assert record["benchmark"] == name and record["quick"] is True
    assert record["command"].startswith(f"python benchmarks/{name}.py --quick")
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"]
    assert record["machine"]["packages"]["onnxruntime"] and record["duration_s"] >= 0
    assert "Command: `python" in text and "Machine:" in text
    return record, text


def test_speedup_quick(bench) -> None:
    record, text = _outputs(bench["out"], "speedup")
    ms = record["median_ms"]
    assert set(ms) == {"searched", "full_tflite", "full_onnxruntime", "full_torch_eager"}
    assert all(v > 0 for v in ms.values())
    per_round = record["speedup_per_round"]["full_tflite"]  # the models timed in turn, round after round
    assert len(per_round) == record["rounds"] == 2
    assert record["speedup_vs_tflite_fp32"] == pytest.approx(sum(per_round) / 2)  # the median of two rounds
    assert 0 <= record["test_accuracy"]["searched"] <= 1
    assert record["reference"] == "teacher (tiny local BERT)"
    assert record["drop_vs_teacher_points"] == pytest.approx(
        (record["test_accuracy"]["teacher_torch"] - record["test_accuracy"]["searched"]) * 100)
    assert isinstance(record["target_met"], bool) and record["pipeline"]["reused"] is False
    assert "Speedup over TFLite fp32" in text and "Training budget" in text


def test_size_quick(bench) -> None:
    import size

    size.main(bench["argv"])
    record, text = _outputs(bench["out"], "size")
    assert record["bert_large_params"] == 335_141_888  # the standard BERT-large encoder with pooler
    assert record["ratio_vs_bert_large"] == pytest.approx(record["bert_large_fp32_bytes"] / record["artifact_bytes"])
    assert record["pipeline"]["reused"] is True  # built once by the speedup run
    assert "smaller than BERT-large fp32" in text and "accuracy change" in text


def test_training_quick(bench) -> None:
    import training

    training.main(bench["argv"])
    record, text = _outputs(bench["out"], "training")
    phases = record["phase_seconds"]
    assert set(phases) >= {"teacher fine-tune", "supernet (sandwich rule)", "search", "export of the front"}
    assert all(v >= 0 for v in phases.values()) and record["total_seconds"] == pytest.approx(sum(phases.values()))
    assert record["device"].startswith("CPU") and "Wall time of each phase" in text
    exported = record["exported"]
    assert len(exported["rows"]) >= 1 and all(0 <= r["test"] <= 1 for r in exported["rows"])
    assert exported["tfidf_test"] is not None and "Every exported model above tuned TF-IDF" in text
    assert "Best exported model" in text


def test_throughput_quick(bench) -> None:
    import throughput

    throughput.main(bench["argv"])
    record, text = _outputs(bench["out"], "throughput")
    assert record["tweets"] == 15 and record["tweets_per_s"] > 0 and record["batch1_tweets_per_s"] > 0
    assert 0 <= record["test_accuracy"] <= 1
    assert "tweets/s" in text


def test_runtimes_quick(bench) -> None:
    import runtimes

    runtimes.main(bench["argv"])
    record, text = _outputs(bench["out"], "runtimes")
    assert len(record["models"]) == 2
    for name, rows in record["models"].items():
        pairs = ["fp32 / fp32"] if name == "full MobileBERT" else ["fp32 / fp32", "dynamic_int8 / dynamic_int8"]
        assert [r["modes"] for r in rows] == pairs
        assert all(r["tflite_status"] == r["onnxruntime_status"] == "ok" for r in rows)
        assert all(r["ort_over_tflite_latency"] > 0 for r in rows)
    assert "full MobileBERT" in text


def test_search_efficiency_quick(bench) -> None:
    import search_efficiency

    search_efficiency.main(bench["argv"])
    record, text = _outputs(bench["out"], "search_efficiency")
    assert sorted(record["curves"]) == sorted(f"{s}-seed{n}" for s in ("tpe", "random") for n in (0, 1, 2))
    for curve in record["curves"].values():
        assert len(curve) == record["n_trials"] == 2
        assert all(0 < v <= 1 + 1e-9 for v in curve) and curve == sorted(curve)  # hypervolume never shrinks
    assert [row["trials"] for row in record["table"]] == [1, 2]
    assert "tpe_mean" in text
    p3 = record["p3"]  # TPE after N = 1 trial against random search after 2
    assert p3["n"] == 1 and p3["tpe_at_n"] == record["table"][0]["tpe_mean"]
    assert p3["random_at_2n"] == record["table"][1]["random_mean"] and "P3: TPE after 1 trials" in text
    assert [pair[0] for pair in p3["per_seed"].values()] == [record["curves"][f"tpe-seed{n}"][0] for n in (0, 1, 2)]
    assert [pair[1] for pair in p3["per_seed"].values()] == [record["curves"][f"random-seed{n}"][1] for n in (0, 1, 2)]
    assert "Per seed, TPE@1 against random@2: seed 0" in text


def test_latency_predictor_quick(bench) -> None:
    import latency_predictor

    latency_predictor.main(bench["argv"])
    record, text = _outputs(bench["out"], "latency_predictor")
    assert sorted(record["curves"]) >= ["measure_all-seed0", "prescreen-seed0"]
    for name in ("measure_all-seed0", "prescreen-seed0"):
        hv = [v for _, v in record["curves"][name]]
        assert hv == sorted(hv) and 0 < hv[-1] <= 1 + 1e-9  # hypervolume never shrinks
    (seed,) = record["per_seed"]
    assert seed["sampled"] == record["n_trials"] == 8 and seed["measured"] + seed["pruned"] <= seed["sampled"]
    assert seed["audit_measured"] == min(seed["pruned"], 5)
    assert record["predictor"]["leave_one_out"]["all"]["n"] >= 1  # 8 measured trials of one backend/mode
    assert "Predictor accuracy, held out" in text and "Mean hypervolume over the seeds against wall time" in text
    floored = latency_predictor.bench_config(False, bench["root"], "cpu-floor")
    assert floored["recipe"] == "cpu" and floored["budgets"] == {"min_accuracy": "baseline"}
    assert Path(record["plot"]).is_file()


def test_replace_section(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nintro\n")
    common.replace_section(path, "size", "first")
    common.replace_section(path, "speedup", "other")
    common.replace_section(path, "size", "second")
    text = path.read_text()
    assert "second" in text and "first" not in text and "other" in text and "intro" in text
    assert text.count("<!-- BEGIN size -->") == 1


def test_qa_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qa

    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(tmp_path / "cache"))
    qa.main(["--quick", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    record, text = _outputs(tmp_path / "out", "qa")
    exported, reference = record["rows"]  # the tiny study has no teacher
    assert exported["seq"] == 24 and reference["seq"] == 384 and reference["runtime/mode"] == "tflite/fp32"
    assert 0 <= exported["EM"] <= exported["F1"] <= 100 and reference["F1"] is None
    assert exported["ms per question"] == pytest.approx(exported["ms per window"] * exported["windows per question"])
    assert record["questions"] == 10 and "ms per question" in text and "90.0 F1" in text


def test_a_trial_outside_a_budget_adds_no_hypervolume() -> None:
    import search_efficiency

    directions = ["maximize", "minimize", "minimize"]
    curves, _ = search_efficiency.hypervolume_curves(
        {"a": [None, [0.8, 2.0, 3.0], [0.7, 1.0, 1.0]], "b": [[0.5, 1.0, 1.0], None]}, directions)
    assert curves["a"][0] == 0.0 and curves["a"][1] < curves["a"][2] == pytest.approx(1.0)
    assert curves["b"][0] == curves["b"][1] > 0.0


def test_qa_int8_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qa_int8

    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(tmp_path / "cache"))
    qa_int8.main(["--quick", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--runs", "3"])
    record, text = _outputs(tmp_path / "out", "qa_int8")
    modes = [row["runtime/mode"] for row in record["rows"]]
    assert modes == qa_int8.int8_modes(("onnxruntime",)) and "onnxruntime/static_int8_minmax" in modes
    for row in record["rows"]:
        assert row["F1 - torch"] == pytest.approx(row["F1"] - row["torch F1"], abs=0.02)
        assert 0 <= row["start/end agreement"] <= 1 and row["within 1 F1"] in ("yes", "no")
    assert record["seq_len"] == 24 and "within 1 F1 of torch" in text
