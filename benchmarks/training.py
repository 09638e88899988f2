"""Training on the CPU: where the deployed pipeline's teacher and supernet trained, how long each phase took,
and their learning curves.

Reads the records the training wrote (the teacher's teacher.json, the supernet's
supernet.json, through the pipeline record of deployed.py): the device, the wall
time of each phase, the teacher's dev/test accuracy against its steps, and each
depth's inherited dev accuracy against the supernet's sandwich steps (seeded
samples of at most 1,000 examples; the exported models' figures use the whole
splits). Nothing is trained or timed here.

    python benchmarks/training.py --quick
    python benchmarks/training.py --write-results
"""

from __future__ import annotations

from typing import Any

import common
import deployed as dp

TARGET_MINUTES = 75


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, run, record = dp.start("training", __doc__, argv)
    teacher, supernet = record["training"]["teacher"], record["training"]["supernet"]
    phases = phase_seconds(record)
    figures = {"device": supernet["device"], "phase_seconds": phases, "total_seconds": sum(phases.values()),
               "teacher_curve": teacher["curve"] if teacher else [], "supernet_curve": supernet.get("curve", []),
               "recipe": record["recipe"], "setup": record["setup"], "exported": exported(record)}
    return run.finish(figures, markdown(figures), args.write_results)


def phase_seconds(record: dict[str, Any]) -> dict[str, float]:
    """Wall seconds of each phase of the pipeline, from the training records and the pipeline's own timing."""
    teacher, supernet = record["training"]["teacher"], record["training"]["supernet"]
    seconds = record["build_seconds"]
    training_wall = supernet.get("wall_seconds", supernet["supernet_seconds"])
    teacher_s = teacher["train_seconds"] if teacher else 0.0
    besides = training_wall - supernet["supernet_seconds"]
    # the supernet's wall time holds the teacher's only when the same run fine-tuned it (not when it was cached)
    data_s = besides - teacher_s if besides >= teacher_s else besides
    return {"teacher fine-tune": teacher_s, "teacher logits, head and neuron importance, data": data_s,
            "supernet (sandwich rule)": supernet["supernet_seconds"], "search": seconds["search"],
            "export of the front": seconds["export"]}


def exported(record: dict[str, Any]) -> dict[str, Any]:
    """Every exported model's test accuracy beside the teacher's and the baselines' (the first two targets)."""
    teacher = record["teacher"]["test_accuracy"]
    baselines = record.get("baselines") or {}
    tfidf = baselines.get("tfidf", {}).get("test")
    rows = [{"model": dp.model_label(m), "dev": m["dev_accuracy"], "test": m["test_accuracy"],
             "MB": m["size_bytes"] / 1e6, "vs teacher (points)": (m["test_accuracy"] - teacher) * 100,
             **({"vs TF-IDF (points)": (m["test_accuracy"] - tfidf) * 100} if tfidf is not None else {})}
            for m in sorted(record["models"], key=lambda m: (m["trial"], m["runtime"]))]
    best = max(record["models"], key=lambda m: m["dev_accuracy"])  # chosen on dev, judged on test
    return {"rows": rows, "teacher_test": teacher, "tfidf_test": tfidf,
            "majority_test": baselines.get("majority", {}).get("test"), "best": dp.model_label(best),
            "best_test": best["test_accuracy"],
            "worst_test": min(m["test_accuracy"] for m in record["models"])}


def headline(e: dict[str, Any]) -> list[str]:
    """The exported models against the teacher and TF-IDF, with the two targets' verdicts."""
    gap = (e["teacher_test"] - e["best_test"]) * 100
    lines = [f"Exported models (the search's feasible Pareto front, and a more accurate trial the search's dev rows "
             f"could not tell from the front's best, if all of dev finds one: README, export; each with every "
             f"installed backend), test accuracy "
             f"through the runtime on the whole test split; MiniLM teacher {e['teacher_test']:.4f}"
             + (f", tuned TF-IDF {e['tfidf_test']:.4f}, majority class {e['majority_test']:.4f}"
                if e["tfidf_test"] is not None else "") + ":", "",
             common.table(e["rows"], ["model", "dev", "test", "MB", "vs teacher (points)", "vs TF-IDF (points)"]), "",
             f"Best exported model (the most accurate on dev): {e['best']}, test {e['best_test']:.4f}, "
             f"{gap:.2f} points below the teacher (target <= 0.5): {common.verdict(gap <= 0.5)}."]
    if e["tfidf_test"] is not None:
        margin = (e["worst_test"] - e["tfidf_test"]) * 100
        lines.append(f"Every exported model above tuned TF-IDF on test: the least accurate is {margin:+.2f} points "
                     f"from it: {common.verdict(margin > 0)}.")
    return lines


def markdown(f: dict[str, Any]) -> str:
    """The training section."""
    r, s = f["recipe"], f["setup"]
    steps = {"teacher fine-tune": r["teacher_steps"], "supernet (sandwich rule)": r["steps"]}
    phases = [{"phase": name, "seconds": sec, "minutes": sec / 60,
               "s per step": sec / steps[name] if name in steps else None} for name, sec in f["phase_seconds"].items()]
    phases.append({"phase": "total", "seconds": f["total_seconds"], "minutes": f["total_seconds"] / 60})
    minutes = f["total_seconds"] / 60
    depth_cols = sorted({k for point in f["supernet_curve"] for k in point if k.startswith("dev@")},
                        key=lambda k: int(k[4:]))
    return "\n".join([
        f"Trained on {f['device']}. Recipe `{s['config'].get('recipe', 'demo')}`: teacher {r['teacher_steps']} steps "
        f"(lr {r['teacher_lr']:g}), supernet {r['steps']} sandwich steps (lr {r['lr']:g}, "
        f"{r['random_subnets_per_step']} random subnet per step), batch {r['batch_size']}, seq {r['seq_len']}; "
        f"search {s['n_trials']} trials" + (f", the last {s['refine']} stepping from the front" if s.get("refine") else "")
        + "; each Pareto model" + (f" (at most {s['max_models']}, those that keep the most hypervolume)"
                                   if s.get("max_models") else "")
        + f" exported with {dp.export_steps(f)} fine-tune steps.", "",
        "Wall time of each phase (the training phases from their own records, which count only the seconds "
        "spent training, across resumes):", "",
        common.table(phases, ["phase", "seconds", "minutes", "s per step"]), "",
        f"The whole pipeline: **{minutes:.0f} minutes** (target: about {TARGET_MINUTES} on 2 cores). Target "
        f"{common.verdict(minutes <= TARGET_MINUTES * 1.05)}. The steps' own speed on a quiet machine is "
        f"`benchmarks/train_speed.py`'s (README); a phase that ran beside other jobs on these 2 cores took longer.", "",
        "Teacher (MiniLM fine-tuned on the tweets): accuracy on seeded samples of 1,000 dev and 1,000 test "
        "examples against steps:", "",
        common.table(f["teacher_curve"], ["step", "seconds", "dev", "test"]), "",
        "Supernet: each depth's inherited dev accuracy (the widest subnet of that depth, 1,000 dev examples) "
        "against sandwich steps:", "",
        common.table(f["supernet_curve"], ["step", "seconds", *depth_cols]), "",
        *headline(f["exported"]),
    ])


if __name__ == "__main__":
    main()
