"""Speedup (P1): the fastest searched Pareto model within 1 point of the teacher vs the full MobileBERT.

The full 24-layer MobileBERT (fp32, random weights: no pretrained MobileBERT
ships in a package, so it is the speed reference only) is timed through TFLite,
ONNX Runtime and torch eager, side by side with the searched model, in this run,
batch 1, one thread, on real tweets. Accuracy is on the test split, through the
runtime (teacher: torch), and the accuracy reference is the fine-tuned teacher.
CANAO reports up to 7.8x over TFLite at minor accuracy loss; target: >= 15x at
<= 1.0 point below the teacher.

    python benchmarks/speedup.py --quick          # tiny task, CI smoke test
    python benchmarks/speedup.py --write-results  # full run (tweets; builds the pipeline once, ~30 min on 2 cores)
"""

from __future__ import annotations

import statistics
from typing import Any

import common
import deployed as dp

TARGET_SPEEDUP, MAX_DROP_POINTS = 15.0, 1.0
#: the searched model and the references are timed in turn, this many times: a VM whose speed swings
#: (the search's reference model moved 1.9x within minutes on 2026-12-08) slows all of them in one round
ROUNDS = 5


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, run, record = dp.start("speedup", __doc__, argv)
    runs, warmup, rounds = (5, 1, 2) if args.quick else (50, 10, ROUNDS)
    ref_name, ref = dp.best_reference(record)
    chosen = dp.pick(record["models"], ref["dev_accuracy"] - MAX_DROP_POINTS / 100, by="export_median_ms")
    timed = timed_in_rounds(chosen, record["reference"], runs, warmup, rounds)
    ms = {k: statistics.median(t["median_ms"] for t in v) for k, v in timed.items()}
    ratios = {k: [t["median_ms"] / s["median_ms"] for t, s in zip(v, timed["searched"])] for k, v in timed.items()}
    drop = (ref["test_accuracy"] - chosen["test_accuracy"]) * 100
    figures = {
        "searched_model": {k: chosen[k] for k in ("trial", "arch", "runtime", "mode", "size_bytes", "dev_accuracy",
                                                  "test_accuracy", "met_accuracy_rule")},
        "median_ms": ms, "p90_ms": {k: statistics.median(t["p90_ms"] for t in v) for k, v in timed.items()},
        "rounds": rounds, "speedup_per_round": ratios,
        "speedup_vs_tflite_fp32": statistics.median(ratios["full_tflite"]),
        "speedup_vs_onnxruntime_fp32": statistics.median(ratios["full_onnxruntime"]),
        "speedup_vs_torch_eager_fp32": statistics.median(ratios["full_torch_eager"]),
        "test_accuracy": {"searched": chosen["test_accuracy"], "teacher_torch": record["teacher"]["test_accuracy"]},
        "reference": ref_name, "drop_vs_teacher_points": drop,
        "seq_len": record["seq_len"], "runs": runs, "warmup": warmup, "n_test": record["n_test"],
        "pipeline": {k: record[k] for k in ("setup", "recipe", "train_examples", "build_seconds", "reused")},
    }
    figures["target_met"] = figures["speedup_vs_tflite_fp32"] >= TARGET_SPEEDUP and drop <= MAX_DROP_POINTS
    figures["majority_class_test_accuracy"] = dp.majority_accuracy(record)
    figures["warning"] = dp.majority_note(record, {"the searched model": chosen["test_accuracy"],
                                                   dp.teacher_label(record): record["teacher"]["test_accuracy"]})
    return run.finish(figures, markdown(figures, chosen, record), args.write_results)


def timed_in_rounds(chosen: dict[str, Any], full: dict[str, Any], runs: int, warmup: int,
                    rounds: int) -> dict[str, list[dict[str, Any]]]:
    """Each model's latency record in each round, the searched model and the three references in turn, each on
    the tweets its own tokenizer wrote (a trimmed vocabulary has ids of its own)."""
    data = dp.timing_data(full["dir"])
    timed: dict[str, list[dict[str, Any]]] = {k: [] for k in ("searched", "full_tflite", "full_onnxruntime",
                                                               "full_torch_eager")}
    for _ in range(rounds):
        timed["searched"].append(dp.measure_latency(chosen["artifact"], dp.timing_data(chosen["dir"]), runs, warmup,
                                                    **chosen["knobs"]))
        for runtime in ("tflite", "onnxruntime"):
            timed[f"full_{runtime}"].append(dp.measure_latency(full[runtime]["artifact"], data, runs, warmup,
                                                               threads=1))
        timed["full_torch_eager"].append(dp.torch_latency_ms(full["dir"], data, runs, warmup))
    return timed


def markdown(f: dict[str, Any], chosen: dict[str, Any], record: dict[str, Any]) -> str:
    """The speedup section."""
    acc = f["test_accuracy"]
    rows = [
        {"model": f"searched: {dp.model_label(chosen)}", "median ms": f["median_ms"]["searched"],
         "p90 ms": f["p90_ms"]["searched"], "speedup": 1.0, "test accuracy": acc["searched"]},
        *[{"model": f"full MobileBERT fp32 (24 layers, random weights), {name}", "median ms": f["median_ms"][key],
           "p90 ms": f["p90_ms"][key], "speedup": statistics.median(f["speedup_per_round"][key])}
          for key, name in (("full_tflite", "TFLite"), ("full_onnxruntime", "ONNX Runtime"),
                            ("full_torch_eager", "torch eager"))],
        {"model": f"{dp.teacher_label(record)} (torch, accuracy only)", "test accuracy": acc["teacher_torch"]},
    ]
    rule = "" if chosen["met_accuracy_rule"] else " (no Pareto model was within 1.0 point on dev: the most accurate was taken)"
    by = f["drop_vs_teacher_points"] - MAX_DROP_POINTS
    missed = [f"speed {f['speedup_vs_tflite_fp32']:.1f}x against {TARGET_SPEEDUP:g}x"] if f["speedup_vs_tflite_fp32"] < TARGET_SPEEDUP else []
    missed += [f"accuracy {by:.2f} points past the 1.0-point allowance"] if by > 0 else []
    return "\n".join([
        f"Batch 1, sequence length {f['seq_len']}, 1 thread, {f['runs']} timed runs after {f['warmup']} warm-up, "
        f"fresh process per measurement, the four models timed in turn {f['rounds']} times (medians over the rounds; "
        f"a speed-up is the median of the rounds' ratios); test accuracy on {f['n_test']} examples through the runtime. "
        f"Chosen: the fastest exported Pareto model within 1.0 point (dev) of the teacher{rule}.", "",
        common.table(rows, ["model", "median ms", "p90 ms", "speedup", "test accuracy"]), "",
        f"Speedup over TFLite fp32: **{f['speedup_vs_tflite_fp32']:.2f}x** ({spread(f['speedup_per_round']['full_tflite'])}; CANAO: up to 7.8x; target >= 15x); "
        f"accuracy drop vs the teacher: **{f['drop_vs_teacher_points']:.2f} points** (target <= 1.0). "
        f"Target {common.verdict(f['target_met'])}{' (' + '; '.join(missed) + ')' if missed else ''}." + (f" {f['warning']}" if f["warning"] else "")
        + ("" if f["target_met"] else " " + dp.closing_line(
            record, lambda m: m["export_median_ms"] <= f["median_ms"]["full_tflite"] / TARGET_SPEEDUP,
            f"at most {f['median_ms']['full_tflite'] / TARGET_SPEEDUP:.2f} ms at export", MAX_DROP_POINTS)), "",
        dp.caps_line(record),
    ])


def spread(ratios: list[float]) -> str:
    return f"{min(ratios):.2f}-{max(ratios):.2f}x over the rounds"


if __name__ == "__main__":
    main()
