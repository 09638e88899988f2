"""Search efficiency: hypervolume vs trial count, the default sampler (TPE) against random search.

Each (sampler, seed) pair is a real `edgenas search` study (run_search) with the
same trial budget, task, supernet (trained once, cached) and measurements; the
hypervolume of the first k completed trials (accuracy up, latency down, size
down) is computed with one reference point shared by all studies, and shown as a
fraction of the hypervolume of all their trials together.

    python benchmarks/search_efficiency.py --quick
    python benchmarks/search_efficiency.py --write-results [--n-trials 10] [--seeds 0 1 2]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import common
import deployed as dp

SAMPLERS = ("tpe", "random")


def efficiency_config(quick: bool, work: Path) -> dict[str, Any]:
    """The deployed pipeline's config (same supernet, cached) with lighter per-trial measurement, floored at
    the best baseline: the search's floor (the export's margin plays no part in a search)."""
    setup = dp.quick_setup(work) if quick else dp.full_setup()
    if not quick:
        setup.config["measure"] = {**setup.config["measure"], "eval_examples": 200, "runs": 10, "warmup": 2}
        setup.config["budgets"] = {"min_accuracy": "baseline"}
    return setup.config


def run_studies(config: dict[str, Any], work: Path, n_trials: int, seeds: list[int]) -> tuple[dict[str, list], list[str], list[str], dict[str, float]]:
    """Run (or resume) one study per sampler and seed; each study's objective values in trial order."""
    from rich.console import Console

    from edgenas.config import SearchConfig
    from edgenas.search.results.report import completed
    from edgenas.search.study.runner import SearchOptions, run_search

    work.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(work / 'efficiency.db').resolve()}"
    search_config = SearchConfig.model_validate(config)
    values: dict[str, list] = {}
    reused, seconds = [], {}
    for sampler in SAMPLERS:
        for seed in seeds:
            name = f"{sampler}-seed{seed}"
            study = finished_study(storage, name, n_trials)
            if study is None:
                study = run_search(search_config, SearchOptions(
                    out_dir=work, storage=storage, study_name=name, n_trials=n_trials, sampler=sampler,
                    seed=seed, progress=False), Console(stderr=True))
            else:
                reused.append(name)
            trials = sorted(completed(study), key=lambda t: t.number)[:n_trials]
            values[name] = [list(t.values) if common.feasible(t) else None for t in trials]
            seconds[name] = (trials[-1].datetime_complete - trials[0].datetime_start).total_seconds()
    return values, search_config.directions(), reused, seconds


def finished_study(storage: str, name: str, n_trials: int):
    """The study if an earlier run already completed n_trials in it (rerunning only rewrites the figures)."""
    import optuna

    from edgenas.search.results.report import completed

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    return study if len(completed(study)) >= n_trials else None


def hypervolume_curves(values: dict[str, list], directions: list[str]) -> tuple[dict[str, list[float]], list[float]]:
    """Hypervolume after each trial, as a fraction of that of all studies' trials; the shared reference point.
    A trial outside a budget (None) adds nothing to its study's hypervolume."""
    from optuna._hypervolume import compute_hypervolume

    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    every = np.array([v for vs in values.values() for v in vs if v is not None]) * sign
    # accuracy's reference is 0; latency and size 10 % beyond the worst seen (as `edgenas report` does)
    reference = np.where(sign < 0, 0.0, every.max(axis=0) * 1.1)
    total = compute_hypervolume(every, reference)
    curves = {}
    for name, vs in values.items():
        curve, points = [], []
        for v in vs:
            points += [np.array(v) * sign] if v is not None else []
            curve.append(compute_hypervolume(np.array(points), reference) / total if points else 0.0)
        curves[name] = curve
    return curves, [float(abs(x)) if x == 0 else float(x) for x in reference * sign]


def after(curve: list[float], trials: int) -> float:
    """A study's hypervolume fraction after its first `trials` trials (its last value if it ran fewer)."""
    return curve[min(trials, len(curve)) - 1]


def summary(curves: dict[str, list[float]], seeds: list[int], n_trials: int) -> list[dict[str, Any]]:
    """Mean and std over seeds of each sampler's hypervolume fraction after k trials."""
    rows = []
    for k in range(n_trials):
        row: dict[str, Any] = {"trials": k + 1}
        for sampler in SAMPLERS:
            at_k = [after(curves[f"{sampler}-seed{s}"], k + 1) for s in seeds]
            row[f"{sampler}_mean"], row[f"{sampler}_std"] = float(np.mean(at_k)), float(np.std(at_k))
        rows.append(row)
    return rows


def p3(rows: list[dict[str, Any]], curves: dict[str, list[float]], seeds: list[int], n_trials: int) -> dict[str, Any]:
    """P3: does TPE after N trials reach random search's hypervolume after 2N (N = half the trials)? With each
    seed's pair, and the seeds' spread beside the difference of the means."""
    n = n_trials // 2
    tpe, random = rows[n - 1]["tpe_mean"], rows[2 * n - 1]["random_mean"]
    return {"n": n, "tpe_at_n": tpe, "random_at_2n": random, "target_met": bool(tpe >= random),
            "tpe_std": rows[n - 1]["tpe_std"], "random_std": rows[2 * n - 1]["random_std"],
            "per_seed": {str(seed): [after(curves[f"tpe-seed{seed}"], n), after(curves[f"random-seed{seed}"], 2 * n)]
                         for seed in seeds}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser(__doc__)
    p.add_argument("--n-trials", type=int, default=None, help="trials per study (default: 10; --quick: 2)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    run = common.Run("search_efficiency", args.quick, args.out, argv)
    work = Path(args.work or dp.default_work(args.quick)) / "efficiency"
    n_trials = args.n_trials or (2 if args.quick else 10)
    config = efficiency_config(args.quick, work)
    values, directions, reused, seconds = run_studies(config, work, n_trials, args.seeds)
    curves, reference = hypervolume_curves(values, directions)
    rows = summary(curves, args.seeds, n_trials)
    final = rows[-1]
    figures = {"samplers": list(SAMPLERS), "seeds": args.seeds, "n_trials": n_trials, "objectives": directions,
               "reference_point": reference, "curves": curves, "values": values, "table": rows,
               "final_hypervolume_fraction": {s: final[f"{s}_mean"] for s in SAMPLERS},
               "p3": p3(rows, curves, args.seeds, n_trials),
               "config": config, "reused_studies": reused,
               "study_seconds": seconds}
    return run.finish(figures, markdown(figures), args.write_results)


def markdown(f: dict[str, Any]) -> str:
    """The search-efficiency section."""
    cols = ["trials"] + [f"{s}_{m}" for s in SAMPLERS for m in ("mean", "std")]
    final = f["final_hypervolume_fraction"]
    return "\n".join([
        f"Hypervolume of the first k completed trials as a fraction of the hypervolume of all "
        f"{len(f['samplers']) * len(f['seeds'])} studies' trials together (objectives accuracy, latency ms, size MB; "
        f"reference point {[round(x, 3) for x in f['reference_point']]}), mean and std over seeds {f['seeds']}; "
        f"{f['n_trials']} trials per study. Every new study, whatever its sampler, first times the largest "
        "sub-config once on each backend (its dynamic int8 mode); TPE (edgenas' default: multivariate, constant "
        "liar) then samples at random up to its 8th trial before its model takes over.", "",
        common.table(f["table"], cols), "",
        f"After {f['n_trials']} trials: TPE {final['tpe']:.3f}, random {final['random']:.3f}. "
        f"P3: TPE after {f['p3']['n']} trials **{f['p3']['tpe_at_n']:.3f}** against random search after "
        f"{2 * f['p3']['n']} trials **{f['p3']['random_at_2n']:.3f}** (target: at least as high). "
        f"Target {common.verdict(f['p3']['target_met'])}"
        + ("" if f["p3"]["target_met"] else f", by {f['p3']['random_at_2n'] - f['p3']['tpe_at_n']:.3f}") + ". "
        + spread_line(f["p3"]), "",
        f"Search config (same task, space and cached supernet as the deployed pipeline of section 1, whose "
        f"training line says where and how long it trained; lighter per-trial measurement): `{json.dumps({k: f['config'][k] for k in ('space', 'supernet', 'candidates', 'measure')})}`."
        + (f" Studies {', '.join(f['reused_studies'])} were completed by an earlier run of this script and reused."
           if f["reused_studies"] else "")
        + " Wall time of each study's trials (first start to last finish, from the study storage): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in f["study_seconds"].items()) + ".",
    ])


def spread_line(p: dict[str, Any]) -> str:
    """Each seed's TPE@N against random@2N, and whether the difference of the means is within the seeds' spread."""
    pairs = p["per_seed"].items()
    ahead = sum(tpe >= random for _, (tpe, random) in pairs)
    line = (f"Per seed, TPE@{p['n']} against random@{2 * p['n']}: "
            + ", ".join(f"seed {seed} {tpe:.3f} / {random:.3f}" for seed, (tpe, random) in pairs)
            + f"; TPE at least as high in {ahead} of {len(pairs)}.")
    gap = abs(p["tpe_at_n"] - p["random_at_2n"])
    if gap < max(p["tpe_std"], p["random_std"]):
        verdict = ("the lead is not strong evidence that TPE is ahead" if p["target_met"]
                   else "the miss is not evidence that TPE is behind")
        line += (f" The means differ by {gap:.3f}, within the seeds' spread (std {p['tpe_std']:.3f} and "
                 f"{p['random_std']:.3f}): with {len(pairs)} seeds {verdict}.")
    return line


if __name__ == "__main__":
    main()
