"""Int8 that keeps F1: every backend's int8 modes against torch on extractive QA (SQuAD v1.1).

The `cpu` QA teacher (the one `edgenas train` caches for `task: {dataset: squad}`, `recipe: cpu`; trained if
absent) is written as the `minilm` space's max MobileBERT, compiled in every int8 mode of every backend at
--seq-len, and scored on --questions seeded dev questions through each runtime, batch 1, one thread: the rows
of `edgenas compare`. Each mode's F1 is set beside the torch F1 of the same weights on the same windows, with
the share of windows whose start and end tokens agree with torch. The issue's goal: every int8 mode within
1 F1 of torch.

    python benchmarks/qa_int8.py --questions 400 --write-results
    python benchmarks/qa_int8.py --quick      # a tiny QA study's model, ONNX Runtime only: the CI smoke run
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import common
from edgenas.config import SearchConfig

GOAL_F1 = 1.0  # points of F1 an int8 mode may lose against torch


def teacher_model_dir(config: SearchConfig, work: Path, questions: int, seq_len: int) -> Path:
    """The QA teacher as an `edgenas export`-like directory: weights, metrics.json and data/ at seq_len."""
    from qa import write_teacher

    from edgenas.search.results.export import write_data
    from edgenas.search.study.runner import load_task_data

    space, splits, tokenizer = load_task_data(config)
    model_dir, _ = write_teacher(config, splits, tokenizer, space, work)
    write_data(splits, tokenizer, config, seq_len, model_dir / "data", questions)
    (model_dir / "metrics.json").write_text(json.dumps({"task": "qa", "seq_len": seq_len, "questions": questions}))
    return model_dir


def int8_modes(runtimes: tuple[str, ...]) -> list[str]:
    """runtime/mode of every int8 mode of these backends."""
    from edgenas.runtime.backends import get_backend

    return [f"{rt}/{m.name}" for rt in runtimes for m in get_backend(rt).modes if m.weights == "int8"]


def figures_of(row: dict[str, Any]) -> dict[str, Any]:
    """One compare row as the table's figures (F1 in points)."""
    if row["status"] != "ok":
        return {"runtime/mode": f"{row['runtime']}/{row['mode']}", "error": row.get("error") or row["status"]}
    f1, torch_f1 = 100 * row["dev_accuracy"], 100 * row["torch_accuracy"]
    return {"runtime/mode": f"{row['runtime']}/{row['mode']}", "F1": round(f1, 2), "torch F1": round(torch_f1, 2),
            "F1 - torch": round(f1 - torch_f1, 2), "start/end agreement": round(row["torch_agreement"], 3),
            "ms per window": row["median_ms"], "MB": round(row["size_mb"], 1),
            "within 1 F1": "yes" if f1 >= torch_f1 - GOAL_F1 else "no"}


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--questions", type=int, default=400, help="seeded SQuAD dev questions to score")
    p.add_argument("--seq-len", type=int, default=384, help="window length the artifacts are compiled at")
    p.add_argument("--runs", type=int, default=10, help="timed runs of each mode")
    args = p.parse_args(argv)
    run = common.Run("qa_int8", args.quick, args.out, argv)
    from edgenas.search.results.compare import CompareOptions, compare_model
    from edgenas.search.study.runner import quiet_libraries

    quiet_libraries()
    work = common.work_dir(args.work, "qa_int8")
    if args.quick:
        from qa import quick_export

        model_dir, runtimes, what = quick_export(work / "quick"), ("onnxruntime",), "a tiny QA study's exported model"
    else:
        config = SearchConfig.model_validate({"task": {"dataset": "squad"}, "recipe": "cpu"})
        model_dir = teacher_model_dir(config, work, args.questions, args.seq_len)
        runtimes, what = ("onnxruntime", "tflite", "executorch"), f"the `cpu` QA teacher ({model_dir.name})"
    options = CompareOptions(modes=int8_modes(runtimes), runtimes=runtimes, runs=args.runs, warmup=2,
                             out_dir=work / "compare")
    rows = [figures_of(row) for row in compare_model(model_dir, options, progress=True)]
    seq_len = json.loads((model_dir / "metrics.json").read_text())["seq_len"]
    scored = [r for r in rows if "F1" in r]
    met = bool(scored) and len(scored) == len(rows) and all(r["within 1 F1"] == "yes" for r in scored)
    columns = ["runtime/mode", "F1", "torch F1", "F1 - torch", "start/end agreement", "ms per window", "MB",
               "within 1 F1", "error"]
    body = "\n".join([
        f"{what}, compiled at {seq_len}-token windows; F1 on the same seeded dev questions through each runtime "
        "and through torch (the official SQuAD v1.1 F1), batch 1, one thread. Start/end agreement: the share of "
        "windows whose start and end tokens are torch's.", "",
        common.table(rows, [c for c in columns if any(c in r for r in rows)]), "",
        f"Every int8 mode within {GOAL_F1:g} F1 of torch: {common.verdict(met)}.",
    ])
    run.finish({"rows": rows, "seq_len": seq_len, "model_dir": str(model_dir)}, body, args.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
