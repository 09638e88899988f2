"""Latency predictor and pre-screen: does predicting latency from the study's own measurements save wall time?

For each seed, two real `edgenas search` studies with the same config and the same number of
sampled candidates: one measures every candidate, one pre-screens (prescreen.enabled). Each study
compiles into its own empty artifact cache, so neither reuses the other's compiles; the arms
alternate, so a slow spell of the machine hits both. Then:
- hypervolume against wall-clock time (trial timestamps from the study storage; one reference
  point for all studies), and when the pre-screened study first reaches the final hypervolume of
  the study that measured everything;
- the share of candidates pruned, and a sample of them measured after all (enqueued into an
  audit study without the pre-screen) to count how many would have joined the front;
- the predictor's accuracy per backend: each trial of the measure-everything studies predicted by
  a model fitted on the others of its (backend, mode, threads, target), and the predictions the
  pre-screen made before measuring a candidate.

    python benchmarks/latency_predictor.py --quick
    python benchmarks/latency_predictor.py --write-results [--n-trials 30] [--seeds 0 1 2] [--setup cpu-floor]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

import common
import deployed as dp

ARMS = ("measure_all", "prescreen")
#: the goals of the issue that asked for the pre-screen
TIME_GOAL, WITHIN_10_GOAL = 2 / 3, 0.9


#: the benchmark's setups: the demo recipe (section 9), or the `cpu` recipe's supernet with the front
#: floored at the best baseline (`budgets.min_accuracy: baseline`), where the pre-screen also skips
#: candidates whose torch score is under the floor
SETUPS = ("demo", "cpu-floor")


def bench_config(quick: bool, work: Path, setup: str = "demo") -> dict[str, Any]:
    """The tweets task at the demo recipe (QUICK: the tiny project), with the three backends' dynamic int8 and
    lighter per-trial measurement; `cpu-floor`: the `cpu` recipe and the baseline floor."""
    if quick:
        config = dp.quick_setup(work).config
        config["candidates"]["runtimes"] = {"onnxruntime": ["fp32"]}
        config["prescreen"] = {"min_trials": 3, "measure_share": 0.2}
    else:
        config = {"task": {"dataset": "tweets"}, "space": "minilm", "recipe": "demo",
                  "candidates": {"runtimes": {"onnxruntime": ["dynamic_int8"], "tflite": ["dynamic_int8"],
                                              "executorch": ["dynamic_int8"]}, "seq_lens": [64]},
                  "measure": {"eval_examples": 200, "runs": 10, "warmup": 2},
                  "prescreen": {"min_trials": 5, "measure_share": 0.2}}
    if setup == "cpu-floor":
        config["budgets"] = {"min_accuracy": "baseline"}
        if not quick:
            config["recipe"] = "cpu"
    return config


def arm_config(config: dict[str, Any], arm: str) -> dict[str, Any]:
    return {**config, "prescreen": {**config["prescreen"], "enabled": arm == "prescreen"}}


def private_cache(shared: Path, own: Path) -> Path:
    """A cache root whose data and supernets are the shared ones and whose artifact cache is empty."""
    own.mkdir(parents=True, exist_ok=True)
    shared.mkdir(parents=True, exist_ok=True)
    for entry in ("data", "supernets", "locks"):
        (shared / entry).mkdir(exist_ok=True)
        if not (own / entry).exists():
            (own / entry).symlink_to((shared / entry).resolve(), target_is_directory=True)
    return own


def run_study(config: dict[str, Any], storage: str, name: str, n_trials: int, seed: int, work: Path,
              enqueue: list[dict[str, Any]] | None = None):
    """One search study (resumed if an earlier run finished it), compiling into its own artifact cache."""
    import optuna
    from rich.console import Console

    from edgenas.config import SearchConfig
    from edgenas.paths import cache_root
    from edgenas.search.study.runner import SearchOptions, run_search

    search_config = SearchConfig.model_validate(config)
    if enqueue:
        study = optuna.create_study(study_name=name, storage=storage, directions=search_config.directions(),
                                    load_if_exists=True)
        if not study.trials:
            for params in enqueue:
                study.enqueue_trial(params)
    shared = cache_root()
    os.environ["EDGENAS_CACHE_DIR"] = str(private_cache(shared, work / "caches" / name))
    try:
        return run_search(search_config, SearchOptions(out_dir=work, storage=storage, study_name=name,
                                                       n_trials=n_trials, sampler="tpe", seed=seed, progress=False,
                                                       summary=False), Console(stderr=True))
    finally:
        os.environ["EDGENAS_CACHE_DIR"] = str(shared)


def timeline(study) -> list[tuple[float, list[float]]]:
    """(seconds since the study's first trial started, objective values) of each completed trial, in time order."""
    from optuna.trial import TrialState

    start = min(t.datetime_start for t in study.trials if t.datetime_start is not None)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and common.feasible(t)]
    return sorted(((t.datetime_complete - start).total_seconds(), list(t.values)) for t in done)


def hypervolume_over_time(timelines: dict[str, list], directions: list[str]) -> tuple[dict[str, list], list[float]]:
    """Each study's hypervolume after each completion, as a fraction of that of all studies' trials together."""
    from optuna._hypervolume import compute_hypervolume

    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    every = np.array([v for line in timelines.values() for _, v in line]) * sign
    reference = np.where(sign < 0, 0.0, every.max(axis=0) * 1.1)
    total = compute_hypervolume(every, reference)
    curves = {}
    for name, line in timelines.items():
        points = np.array([v for _, v in line]) * sign
        curves[name] = [(t, compute_hypervolume(points[: k + 1], reference) / total) for k, (t, _) in enumerate(line)]
    return curves, [float(x) for x in np.abs(reference)]


def time_to_reach(curve: list[tuple[float, float]], level: float) -> float | None:
    return next((t for t, hv in curve if hv >= level - 1e-12), None)


def hv_at(curve: list[tuple[float, float]], t: float) -> float:
    return max([hv for s, hv in curve if s <= t], default=0.0)


def audited(study, audit, directions: list[str]) -> dict[str, Any]:
    """How many of the audited (pruned, then measured) candidates would have joined the pre-screened study's front."""
    from optuna.trial import TrialState

    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    front = [np.array(t.values) * sign for t in study.trials if t.state == TrialState.COMPLETE and common.feasible(t)]
    joined = 0
    measured = [t for t in audit.trials if t.state == TrialState.COMPLETE]
    for trial in filter(common.feasible, measured):
        point = np.array(trial.values) * sign
        joined += not any(np.all(f <= point) and np.any(f < point) for f in front)
    return {"measured": len(measured), "would_join_front": int(joined)}


def predictor_accuracy(studies: list, config: dict[str, Any]) -> dict[str, Any]:
    """Held-out (leave-one-out) accuracy per backend on the measure-everything trials, and the pre-screen's own
    predictions made before it measured a candidate."""
    from optuna.trial import TrialState

    from edgenas.search.space import load_space
    from edgenas.search.study.objectives import result_of
    from edgenas.search.study.predictor import (DEFAULT_VOCAB, PREDICTION_ATTR, HeldOut, accuracy_figures, held_out,
                                                observations)
    from edgenas.types import Candidate

    family, min_trials = load_space(config["space"]).family, config["prescreen"]["min_trials"]
    pooled = [o for study in studies["measure_all"] for o in observations(study.trials, DEFAULT_VOCAB)]
    pairs = held_out(pooled, family, min_trials)
    loo = {"all": accuracy_figures(pairs)} | {b: accuracy_figures([p for p in pairs if p.backend == b])
                                             for b in sorted({p.backend for p in pairs})}
    prospective = []
    for study in studies["prescreen"]:
        for t in study.trials:
            result, said = result_of(t), t.user_attrs.get(PREDICTION_ATTR)
            if t.state == TrialState.COMPLETE and result is not None and said and result.duplicate_of is None:
                c = Candidate.from_dict(t.user_attrs["candidate"])
                prospective.append(HeldOut(c.runtime, c.quantization, said["latency_ms"]["value"], result.latency_ms))
    return {"leave_one_out": loo, "before_measuring": accuracy_figures(prospective),
            "pairs": [p.__dict__ for p in pairs]}


def run(config: dict[str, Any], work: Path, n_trials: int, seeds: list[int], audit_size: int) -> dict[str, Any]:
    from optuna.trial import TrialState

    from edgenas.config import SearchConfig

    work.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(work / 'predictor.db').resolve()}"
    directions = SearchConfig.model_validate(config).directions()
    studies: dict[str, list] = {arm: [] for arm in ARMS}
    for seed in seeds:
        for arm in ARMS:
            studies[arm].append(run_study(arm_config(config, arm), storage, f"{arm}-seed{seed}", n_trials, seed, work))
    timelines = {s.study_name: timeline(s) for arm in ARMS for s in studies[arm]}
    curves, reference = hypervolume_over_time(timelines, directions)
    per_seed, audits = [], []
    for seed, full, screened in zip(seeds, studies["measure_all"], studies["prescreen"]):
        full_curve, screened_curve = curves[full.study_name], curves[screened.study_name]
        final, end = full_curve[-1][1], full_curve[-1][0]
        reached = time_to_reach(screened_curve, final)
        states = [t.state for t in screened.trials]
        pruned = [t for t in screened.trials if t.state == TrialState.PRUNED]
        sample = [dict(t.params) for t in pruned[:audit_size]]
        audit = (run_study(arm_config(config, "measure_all"), storage, f"audit-seed{seed}", len(sample), seed, work,
                           enqueue=sample) if sample else None)
        audits.append(audited(screened, audit, directions) if audit else {"measured": 0, "would_join_front": 0})
        per_seed.append({"seed": seed, "measure_all_s": end, "measure_all_hv": final,
                         "prescreen_s": screened_curve[-1][0], "prescreen_hv": screened_curve[-1][1],
                         "prescreen_reaches_it_at_s": reached,
                         "time_ratio": None if reached is None else reached / end,
                         "sampled": len(states), "pruned": len(pruned),
                         "measured": states.count(TrialState.COMPLETE), **{f"audit_{k}": v for k, v in audits[-1].items()}})
    longest = max(c[-1][0] for c in curves.values())
    grid = [longest * k / 10 for k in range(1, 11)]
    table = [{"seconds": t, **{f"{arm}_hv": float(np.mean([hv_at(curves[s.study_name], t) for s in studies[arm]]))
                               for arm in ARMS}} for t in grid]
    ratios = [r["time_ratio"] for r in per_seed]
    accuracy = predictor_accuracy(studies, config)
    return {"seeds": seeds, "n_trials": n_trials, "objectives": directions, "reference_point": reference,
            "per_seed": per_seed, "hv_over_time": table, "curves": curves, "predictor": accuracy,
            "mean_time_ratio": None if None in ratios else float(np.mean(ratios)),
            "time_goal_met": None not in ratios and float(np.mean(ratios)) <= TIME_GOAL,
            "within_10_goal_met": accuracy["leave_one_out"]["all"].get("within_10", 0) >= WITHIN_10_GOAL,
            "config": config}


def plot(figures: dict[str, Any], out: Path, name: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for study, curve in figures["curves"].items():
        if study.startswith("audit"):
            continue
        style = "-" if study.startswith("prescreen") else "--"
        ax.step([t for t, _ in curve], [hv for _, hv in curve], style, where="post", label=study)
    ax.set(xlabel="seconds since the study's first trial", ylabel="hypervolume (fraction of all trials')",
           title="hypervolume against wall time")
    ax.legend(fontsize=7)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}_hv.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser(__doc__)
    p.add_argument("--n-trials", type=int, default=None, help="sampled candidates per study (default: 30; --quick: 8)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (--quick: 0)")
    p.add_argument("--audit", type=int, default=5, help="pruned candidates measured after all, per seed")
    p.add_argument("--setup", choices=SETUPS, default="demo",
                   help="demo: the demo recipe; cpu-floor: the cpu recipe, the front floored at the best baseline")
    args = p.parse_args(argv)
    suffix = "" if args.setup == "demo" else "_" + args.setup.replace("-", "_")
    run_ = common.Run("latency_predictor" + suffix, args.quick, args.out, argv, script="latency_predictor")
    work = Path(args.work or dp.default_work(args.quick)) / ("predictor" + suffix)
    config = bench_config(args.quick, work, args.setup)
    figures = run(config, work, args.n_trials or (8 if args.quick else 30), args.seeds or ([0] if args.quick else [0, 1, 2]),
                  args.audit)
    figures["plot"] = str(plot(figures, args.out, run_.name))
    return run_.finish(figures, markdown(figures), args.write_results)


def _figures_line(f: dict[str, Any]) -> str:
    if not f.get("n"):
        return "no held-out trial"
    return (f"{f['within_10']:.0%} within ±10 %, {f['within_20']:.0%} within ±20 %, Spearman {f['spearman']:.2f} "
            f"({f['n']} trials)")


def markdown(f: dict[str, Any]) -> str:
    """The latency-predictor section."""
    loo = f["predictor"]["leave_one_out"]
    per_seed_cols = ["seed", "measure_all_s", "measure_all_hv", "prescreen_s", "prescreen_hv",
                     "prescreen_reaches_it_at_s", "time_ratio", "sampled", "pruned", "audit_measured",
                     "audit_would_join_front"]
    pruned, sampled = sum(r["pruned"] for r in f["per_seed"]), sum(r["sampled"] for r in f["per_seed"])
    joined, audited_n = sum(r["audit_would_join_front"] for r in f["per_seed"]), sum(r["audit_measured"] for r in f["per_seed"])
    ratio = f["mean_time_ratio"]
    return "\n".join([
        f"Same config, seeds {f['seeds']}, {f['n_trials']} sampled candidates per study, TPE; each study compiles into "
        "its own empty artifact cache and the arms alternate. Hypervolume over accuracy, latency and size with one "
        f"reference point {[round(x, 3) for x in f['reference_point']]} for all studies, as a fraction of all trials'.", "",
        "**Predictor accuracy, held out** (each measured trial predicted by a model fitted on the other trials of its "
        f"backend, mode, threads and target): {_figures_line(loo['all'])}"
        + "".join(f"; {b}: {_figures_line(v)}" for b, v in loo.items() if b != "all")
        + f". Predictions the pre-screen made before measuring a candidate: {_figures_line(f['predictor']['before_measuring'])}."
        + f" Goal: within ±10 % for at least 90 %: {common.verdict(f['within_10_goal_met'])}.", "",
        common.table(f["per_seed"], per_seed_cols), "",
        "Mean hypervolume over the seeds against wall time:", "",
        common.table(f["hv_over_time"], ["seconds", "measure_all_hv", "prescreen_hv"]), "",
        f"Pruned: {pruned} of {sampled} sampled candidates ({pruned / max(sampled, 1):.0%}); of the {audited_n} pruned "
        f"candidates measured after all, {joined} would have joined the front. "
        + (f"The pre-screened study reached the measure-everything study's final hypervolume in {ratio:.2f} of its wall "
           "time on average" if ratio is not None else
           "The pre-screened study did not reach the measure-everything study's final hypervolume in every seed")
        + f" (goal: at most {TIME_GOAL:.2f}): {common.verdict(f['time_goal_met'])}.", "",
        f"Config: `{json.dumps(f['config'])}`.",
    ])


if __name__ == "__main__":
    main()
