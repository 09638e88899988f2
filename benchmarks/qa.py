"""Extractive QA (SQuAD v1.1): an exported Pareto model against the full MobileBERT and the teacher.

Three rows, on the same dev questions, batch 1, on this machine:
  - the exported model (`edgenas export` of a QA study): EM, F1 and latency through its runtime(s),
    as its metrics.json recorded them;
  - the full 24-layer MobileBERT (transformers' MobileBertConfig defaults) as a QA model, fp32 TFLite
    at sequence length 384, timed here. No pretrained MobileBERT ships in a package, so its weights are
    random: only its speed is measured (MobileBERT reports 90.0 F1 with pretraining on 3B tokens);
  - the teacher the study distilled from (all-MiniLM-L6-v2 fine-tuned on SQuAD), written into the
    MobileBERT class (the `minilm` space's max sub-config), compiled to ONNX Runtime fp32 at the
    exported model's sequence length and scored and timed through the runtime.

Per question = per window x the windows a question's context takes at that sequence length.

    python benchmarks/qa.py --model edgenas-export/trial-3-onnxruntime-dynamic_int8 [--write-results]
    python benchmarks/qa.py --quick      # a tiny QA study built here: the CI smoke run
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import common
from edgenas.config import SearchConfig
from edgenas.paths import cache_root

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_SEQ_LEN = 384


def quick_export(work: Path) -> Path:
    """A tiny QA study (tests/tiny_project.py) searched and its first trial exported: its model directory."""
    from rich.console import Console

    from edgenas.config import load_config
    from edgenas.search.results.export import ExportOptions, export_study
    from edgenas.search.study.runner import SearchOptions, run_search

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_project import make_tiny_qa_project

    config = load_config(make_tiny_qa_project(work / "project", runtimes={"onnxruntime": ["fp32"]}))
    storage = f"sqlite:///{work / 'edgenas.db'}"
    quiet = Console(file=io.StringIO())
    run_search(config, SearchOptions(out_dir=work, storage=storage, study_name="qa", n_trials=2, progress=False), quiet)
    options = ExportOptions(work / "export", trials="0", steps=2, batch_size=8, progress=False)
    return export_study("qa", storage, options, quiet)[0]


def exported_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The exported model's figures through each runtime it was built for."""
    rows = []
    for runtime, artifact in metrics["artifacts"].items():
        m = artifact["measurement"]
        rows.append(row(f"exported trial {metrics['trial']}, {metrics['candidate']['arch']['num_hidden_layers']} "
                        f"layers", f"{runtime}/{artifact['mode']}", metrics["seq_len"], m, artifact["size_mb"]))
    return rows


def row(model: str, mode: str, seq_len: int, measured: dict[str, Any], size_mb: float) -> dict[str, Any]:
    """One table row from a measurement (EM and F1 in percent, absent when not scored)."""
    scored = "exact_match" in measured
    return {"model": model, "runtime/mode": mode, "seq": seq_len,
            "EM": 100 * measured["exact_match"] if scored else None,
            "F1": 100 * measured["accuracy"] if scored else None,
            "ms per window": measured["median_ms"], "windows per question": measured["windows_per_question"],
            "ms per question": measured["median_ms"] * measured["windows_per_question"], "MB": size_mb,
            "noisy": measured.get("noisy")}


def reference_row(questions_npz: dict[str, Any], config: SearchConfig, tokenizer, work: Path, space_name: str,
                  runs: int) -> dict[str, Any]:
    """The full MobileBERT QA (random weights) as fp32 TFLite at 384 tokens, timed on this machine."""
    import torch
    from transformers import MobileBertConfig, MobileBertForQuestionAnswering

    from edgenas.compile import compile_artifact
    from edgenas.runtime.measure import measure
    from edgenas.search.space import load_space
    from edgenas.search.study.trial import compile_cache_dir

    model_dir = work / f"reference-{space_name}"
    if not (model_dir / "config.json").is_file():
        torch.manual_seed(0)
        shape = load_space(space_name).max_arch().to_dict() if space_name != "mobilebert" else {}
        MobileBertForQuestionAnswering(MobileBertConfig(vocab_size=len(tokenizer), num_labels=2, **shape)).save_pretrained(model_dir)
    windows = windows_at(questions_npz, tokenizer, config, REFERENCE_SEQ_LEN)
    example = work / "reference-window.npz"  # timed on a real window (the tiny vocabulary has no id 1000)
    np.savez(example, **{k: v[:1] for k, v in windows.inputs().items()})
    artifact = compile_artifact(model_dir, "tflite", "fp32", seq_len=REFERENCE_SEQ_LEN, cache_dir=compile_cache_dir(),
                                timeout_s=1800)
    measured = measure(artifact.path, example, runs=runs, warmup=5).to_json()
    measured["windows_per_question"] = len(windows) / len(set(windows.example.tolist()))
    label = "MobileBERT, 24 layers (random weights)" if space_name == "mobilebert" else "the space's max (random weights)"
    return row(label, "tflite/fp32", REFERENCE_SEQ_LEN, measured, artifact.meta["size_bytes"] / 1e6)


def windows_at(questions_npz: dict[str, Any], tokenizer, config: SearchConfig, seq_len: int):
    """The windows of the exported model's dev questions read at seq_len."""
    from edgenas.runtime.tasks import question_field
    from edgenas.runtime.qa import make_windows

    questions, contexts = (question_field(questions_npz[key]) for key in ("questions", "contexts"))
    return make_windows(tokenizer.backend_tokenizer, questions, contexts, seq_len, config.task.stride,
                        pad_token=tokenizer.pad_token)


def write_teacher(config: SearchConfig, splits, tokenizer, space, work: Path) -> tuple[Path, Path]:
    """The config's fine-tuned QA teacher (trained if not cached) saved as the space's max MobileBERT under
    work: (that directory, the teacher's cache directory)."""
    from edgenas.search.training.supernet import MobileBertSupernet
    from edgenas.search.training.teacher import load_teacher

    recipe = config.train_recipe()
    _, teacher_dir = load_teacher(recipe.teacher, splits, tokenizer, recipe, cache_root() / "supernets")
    out = work / f"teacher-{teacher_dir.name}"
    if not (out / "config.json").is_file():
        net = MobileBertSupernet(space.max_arch(), len(tokenizer), 2, task="qa", family=space.family,
                                 layers=space.layers, max_position_embeddings=512)
        net.load_checkpoint(teacher_dir)
        net.extract(space.max_arch()).save_pretrained(out)
    return out, teacher_dir


def teacher_row(model_dir: Path, metrics: dict[str, Any], config: SearchConfig, splits, tokenizer, space,
                work: Path, runs: int) -> dict[str, Any]:
    """The fine-tuned teacher as the space's max MobileBERT, ONNX Runtime fp32, scored and timed on the dev set."""
    from edgenas.compile import compile_artifact
    from edgenas.runtime.measure import measure
    from edgenas.search.study.trial import compile_cache_dir

    out, teacher_dir = write_teacher(config, splits, tokenizer, space, work)
    seq_len, data = metrics["seq_len"], model_dir / "data"
    artifact = compile_artifact(out, "onnxruntime", "fp32", seq_len=seq_len, calibration=data / "calibration.npz",
                                check_data=data / "parity.npz", cache_dir=compile_cache_dir(), timeout_s=1800)
    measured = measure(artifact.path, data / "dev.npz", runs=runs, warmup=5).to_json()
    record = json.loads((teacher_dir / "teacher.json").read_text()) if (teacher_dir / "teacher.json").is_file() else {}
    label = f"teacher ({record.get('steps', '?')} steps on {record.get('device', '?')})"
    return row(label, "onnxruntime/fp32", seq_len, measured, artifact.meta["size_bytes"] / 1e6)


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--model", type=Path, help="an `edgenas export` directory of a QA study")
    p.add_argument("--runs", type=int, default=30, help="timed runs of each reference")
    args = p.parse_args(argv)
    run = common.Run("qa", args.quick, args.out, argv)
    from edgenas.runtime.tasks import question_field
    from edgenas.search.study.runner import load_task_data, quiet_libraries
    from edgenas.search.study.trial import load_npz

    quiet_libraries()
    work = common.work_dir(args.work, "qa")
    model_dir = quick_export(work / "quick") if args.quick else args.model
    if model_dir is None or not (model_dir / "metrics.json").is_file():
        p.error("--model must be an `edgenas export` directory (or use --quick)")
    metrics = json.loads((model_dir / "metrics.json").read_text())
    from edgenas.runtime.tasks import task_of_model

    if not task_of_model(model_dir).spans:
        p.error(f"{model_dir} is not a QA model (its metrics.json says task {metrics.get('task', 'classification')})")
    config = SearchConfig.model_validate(metrics["config"])
    space, splits, tokenizer = load_task_data(config)
    dev = load_npz(model_dir / "data" / "dev.npz")
    rows = exported_rows(metrics)
    rows.append(reference_row(dev, config, tokenizer, work, "mobilebert" if not args.quick else config.space, args.runs))
    if config.train_recipe().teacher:
        rows.append(teacher_row(model_dir, metrics, config, splits, tokenizer, space, work, args.runs))
    columns = ["model", "runtime/mode", "seq", "EM", "F1", "ms per window", "windows per question", "ms per question",
               "MB"]
    n = len(question_field(dev["answers"]))
    body = "\n".join([
        f"{n} dev questions of {metrics['data']['dataset']}, batch 1, one thread unless the trial chose "
        "more; EM and F1 are the official ones, computed on each artifact's own logits.", "",
        common.table(rows, columns), "",
        "The 24-layer MobileBERT has random weights here (no pretrained MobileBERT ships in a package): its row "
        "is a speed reference only; MobileBERT reports 90.0 F1 with pretraining on 3B tokens.",
    ])
    run.finish({"rows": rows, "questions": n, "model_dir": str(model_dir)}, body, args.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
