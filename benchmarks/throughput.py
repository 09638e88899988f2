"""Throughput: tweets per second on one core for the deployed classifier, with its test accuracy.

The deployed classifier is the model speedup.py picks (fastest within 1.0 point
of the better reference on dev). Its exported directory is loaded with
edgenas.runtime.predict.Predictor (tokenizer + artifact, one thread) and
classifies the raw test tweets, text in, label out, with this process pinned to
one core; accuracy is that of those predictions. Target: >= 1000 tweets/s within
1.0 point of the teacher (Rahman et al.: at least one tweet per second on a Pi).

    python benchmarks/throughput.py --quick
    python benchmarks/throughput.py --write-results
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

import common
import deployed as dp

TARGET_PER_S, MAX_DROP_POINTS = 1000.0, 1.0


@contextlib.contextmanager
def one_core() -> Iterator[int]:
    """Pin this process to its first allowed core for the block."""
    before = os.sched_getaffinity(0)
    core = min(before)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, before)


def classify(model_dir: str, runtime: str, texts: list[str], batch_size: int, repeats: int
             ) -> tuple[list[str], float, float | None]:
    """Labels of texts, the best-of-repeats wall seconds for all of them through Predictor, and (for an
    artifact of dynamic length) the same with every text padded to the compiled length, as before the
    Predictor sorted texts by length; on one core, one thread."""
    from edgenas.runtime.predict import Predictor

    with one_core():
        predictor = Predictor(model_dir, runtime=runtime, threads=1)
        predictor.predict(texts[:batch_size], batch_size=batch_size)  # warm-up
        labels: list[str] = []

        def by_length() -> None:
            labels[:] = [p.label for p in predictor.predict(texts, batch_size=batch_size)]

        def padded() -> None:
            predictor.runner.predict_logits(predictor.encode(texts), batch_size=batch_size).argmax(axis=1)

        seconds = best_of(by_length, repeats)
        dynamic = predictor.runner.seq_len is None
        return labels, seconds, best_of(padded, repeats) if dynamic else None


def best_of(work, repeats: int) -> float:
    """The fastest of `repeats` wall-clock runs of work(), in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, run, record = dp.start(
        "throughput", __doc__, argv, extra=lambda p: p.add_argument("--batch-size", type=int, default=32))
    ref_name, ref = dp.best_reference(record)
    chosen = dp.pick(record["models"], ref["dev_accuracy"] - MAX_DROP_POINTS / 100, by="export_median_ms")
    texts, gold = test_texts(record)
    repeats = 1 if args.quick else 3
    labels, seconds, padded_seconds = classify(chosen["dir"], chosen["runtime"], texts, args.batch_size, repeats)
    accuracy = float(np.mean([a == b for a, b in zip(labels, gold)]))
    batch1 = dp.measure_latency(chosen["artifact"], dp.timing_data(chosen["dir"]), 5 if args.quick else 50,
                                1 if args.quick else 10, **{**chosen["knobs"], "cpus": [0]})
    teacher = record["teacher"]["test_accuracy"]
    figures = {
        "searched_model": {k: chosen[k] for k in ("trial", "arch", "runtime", "mode", "size_bytes")},
        "tweets": len(texts), "batch_size": args.batch_size, "repeats": repeats, "seconds": seconds,
        "tweets_per_s": len(texts) / seconds,
        "padded_tweets_per_s": None if padded_seconds is None else len(texts) / padded_seconds,
        "batch1_median_ms": batch1["median_ms"],
        "batch1_tweets_per_s": 1000.0 / batch1["median_ms"], "test_accuracy": accuracy,
        "test_accuracy_at_export": chosen["test_accuracy"], "teacher_test_accuracy": teacher,
        "drop_vs_teacher_points": (teacher - accuracy) * 100,
        "pipeline": {k: record[k] for k in ("setup", "recipe", "train_examples", "build_seconds", "reused")},
    }
    figures["target_met"] = figures["tweets_per_s"] >= TARGET_PER_S and figures["drop_vs_teacher_points"] <= MAX_DROP_POINTS
    figures["majority_class_test_accuracy"] = dp.majority_accuracy(record)
    figures["warning"] = dp.majority_note(record, {"the deployed classifier": accuracy,
                                                   dp.teacher_label(record): teacher})
    return run.finish(figures, markdown(figures, chosen, record), args.write_results)


def test_texts(record: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The raw test tweets and their label names, from the task the pipeline was built on."""
    from edgenas.search.study.runner import load_task_data

    config = dp.Setup(**record["setup"]).search_config()
    _, splits, _ = load_task_data(config)
    return list(splits.test.texts), [splits.label_names[i] for i in splits.test.labels]


def markdown(f: dict[str, Any], chosen: dict[str, Any], record: dict[str, Any]) -> str:
    """The throughput section."""
    return "\n".join([
        f"Deployed classifier: {dp.model_label(chosen)}. Raw test tweets -> tokenizer -> artifact -> labels through "
        f"`edgenas.runtime.predict.Predictor`, one thread, process pinned to one core, batch {f['batch_size']}, "
        f"best of {f['repeats']} passes over {f['tweets']} tweets"
        + (" (the artifact takes any length: tweets sorted by length, each batch padded to its longest)."
           if f["padded_tweets_per_s"] is not None else " (padded to the compiled length)."), "",
        common.table([
            {"figure": "tweets per second (one core, end to end)", "value": f["tweets_per_s"]},
            *([{"figure": "the same, every tweet padded to the compiled length", "value": f["padded_tweets_per_s"]}]
              if f["padded_tweets_per_s"] is not None else []),
            {"figure": "batch-1 tweets per second (1000 / median ms, tokenized input)", "value": f["batch1_tweets_per_s"]},
            {"figure": "test accuracy of these predictions", "value": f["test_accuracy"]},
            {"figure": f"{dp.teacher_label(record)} test accuracy (torch)", "value": f["teacher_test_accuracy"]},
        ], ["figure", "value"]), "",
        f"**{f['tweets_per_s']:.0f} tweets/s** on one core (target >= 1000) at **{f['drop_vs_teacher_points']:.2f} "
        f"points** below the teacher (target <= 1.0). Target {common.verdict(f['target_met'])}." + (f" {f['warning']}" if f["warning"] else "")
        + ("" if f["target_met"] else " " + dp.closing_line(
            record, lambda m: m["export_median_ms"] <= 1000 / TARGET_PER_S, "at most 1.00 ms per tweet at export "
            "(batch 1)", MAX_DROP_POINTS)), "",
        dp.caps_line(record),
    ])


if __name__ == "__main__":
    main()
