"""Runtimes: TFLite vs ONNX Runtime on the same models and quantization modes (`edgenas compare`).

Both the deployed searched model and the full MobileBERT are compiled in each
mode for both runtimes, timed side by side (batch 1, one thread, fresh process)
and scored on the dev split through the runtime.

    python benchmarks/runtimes.py --quick
    python benchmarks/runtimes.py --write-results
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common
import deployed as dp

from edgenas.runtime.backends import get_backend

#: mode pairs (tflite mode, onnxruntime mode): each TFLite mode and its nearest ONNX Runtime mode in the catalog
PAIRS = tuple((mode.name, mode.nearest["onnxruntime"]) for mode in get_backend("tflite").modes)


def compare(model_dir: str, pairs: tuple[tuple[str, str], ...], runs: int, warmup: int) -> list[dict[str, Any]]:
    """One row per mode pair: both runtimes' latency, dev accuracy, size (edgenas.search.results.compare)."""
    from edgenas.search.results.compare import CompareOptions, compare_model

    modes = [f"tflite/{t}" for t, _ in pairs] + [f"onnxruntime/{o}" for _, o in pairs]
    rows = {(r["runtime"], r["mode"]): r for r in compare_model(Path(model_dir), CompareOptions(
        modes=modes, runs=runs, warmup=warmup))}
    out = []
    for tfl_mode, ort_mode in pairs:
        t, o = rows[("tflite", tfl_mode)], rows[("onnxruntime", ort_mode)]
        row = {"modes": f"{tfl_mode} / {ort_mode}", "tflite_status": t["status"], "onnxruntime_status": o["status"]}
        for name, r in (("tflite", t), ("onnxruntime", o)):
            row |= {f"{name}_{k}": r.get(k) for k in ("median_ms", "p90_ms", "dev_accuracy", "size_mb", "error")}
        if t["status"] == o["status"] == "ok":
            row["ort_over_tflite_latency"] = o["median_ms"] / t["median_ms"]
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, run, record = dp.start("runtimes", __doc__, argv)
    ref_name, ref = dp.best_reference(record)
    chosen = dp.pick(record["models"], ref["dev_accuracy"] - 0.01, by="export_median_ms")
    runs, warmup = (5, 1) if args.quick else (30, 5)
    searched_pairs = PAIRS[:2] if args.quick else PAIRS
    models = {
        f"searched: {dp.model_label(chosen)}": compare(chosen["dir"], searched_pairs, runs, warmup),
        "full MobileBERT": compare(record["reference"]["dir"], PAIRS[:1] if args.quick else PAIRS[:2], runs, warmup),
    }
    figures = {"models": models, "runs": runs, "warmup": warmup, "seq_len": record["seq_len"],
               "pipeline": {k: record[k] for k in ("setup", "recipe", "train_examples", "build_seconds", "reused")}}
    return run.finish(figures, markdown(figures, record), args.write_results)


def markdown(f: dict[str, Any], record: dict[str, Any]) -> str:
    """The runtimes section: one table per model."""
    cols = ["modes", "tflite_median_ms", "onnxruntime_median_ms", "ort_over_tflite_latency", "tflite_dev_accuracy",
            "onnxruntime_dev_accuracy", "tflite_size_mb", "onnxruntime_size_mb"]
    parts = [f"Batch 1, sequence length {f['seq_len']}, 1 thread, {f['runs']} timed runs after {f['warmup']} warm-up "
             "(fresh process each); dev accuracy through the runtime on the whole dev split. "
             "`ort_over_tflite_latency` > 1 means TFLite is faster."]
    for name, rows in f["models"].items():
        note = (" (24 layers, random weights: speed and size only, its accuracy is that of chance)"
                if name == "full MobileBERT" else "")
        parts += ["", f"**{name}**{note}", "", common.table(rows, cols)]
        failed = [f"{r['modes']}: {r.get('tflite_error') or r.get('onnxruntime_error')}" for r in rows
                  if "ort_over_tflite_latency" not in r]
        parts += [f"Failed: {'; '.join(failed)}"] if failed else []
    return "\n".join(parts + ["", dp.caps_line(record)])


if __name__ == "__main__":
    main()
