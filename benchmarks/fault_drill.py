"""Fault drill: N workers on one study, one killed with SIGKILL mid-trial; count lost and duplicate trials.

    python benchmarks/fault_drill.py [--workers 3] [--trials 12] [--storage URL]

Runs real `edgenas search --workers N` processes on a tiny project (the one the
tests use) against PostgreSQL by default, kills one worker while trials are
running, and prints one line: workers, trials by state, the trials failed by
heartbeat and retried, trials lost (must be 0) and candidates measured twice
(must be 0).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tiny_project import make_tiny_project  # noqa: E402

POSTGRES = "postgresql://edgenas:edgenas@127.0.0.1:55432/edgenas"


def kill_one_worker_mid_trial(parent: subprocess.Popen, study: str, url: str) -> int | None:
    """Wait until trials are running, then SIGKILL one of the parent's worker processes."""
    while parent.poll() is None:
        time.sleep(0.5)
        try:
            running = optuna.load_study(study_name=study, storage=url).get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # not created yet
            continue
        workers = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
        if running and workers:
            os.kill(int(workers[0]), signal.SIGKILL)
            return int(workers[0])
    return None


def tally(study: str, url: str) -> dict:
    """Trials by state, heartbeat retries, lost trials and candidates measured twice."""
    trials = optuna.load_study(study_name=study, storage=url).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    retried = {t.system_attrs["failed_trial"] for t in trials if "failed_trial" in t.system_attrs}
    lost = [t.number for t in trials if t.state == TrialState.FAIL and t.number not in retried
            and "fail_reason" not in t.user_attrs]
    measured = [t for t in complete if "duplicate_of" not in t.user_attrs["result"]]
    return {
        "states": {s.name: sum(1 for t in trials if t.state == s) for s in TrialState},
        "retried": sorted(retried), "lost": len(lost),
        "measured_twice": len(measured) - len({tuple(sorted(t.params.items())) for t in measured}),
        "served_from_earlier_trial": len(complete) - len(measured),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--storage", default=os.environ.get("EDGENAS_TEST_POSTGRES_URL", POSTGRES))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edgenas-drill-"))
    config = make_tiny_project(root / "project", seq_lens=[16, 24],
                               runtimes={"onnxruntime": ["fp32", "dynamic_int8"], "tflite": ["dynamic_int8"]})
    study = f"drill-{int(time.time())}"
    env = {**os.environ, "EDGENAS_CACHE_DIR": str(root / "cache"), "EDGENAS_HEARTBEAT_S": "2",
           "EDGENAS_STORAGE": args.storage}
    started = time.time()
    with open(root / "search.log", "w") as log:
        parent = subprocess.Popen(
            [sys.executable, "-m", "edgenas.cli", "search", "--config", str(config), "--study", study,
             "--n-trials", str(args.trials), "--workers", str(args.workers), "--no-progress", "--out", str(root / "out")],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        victim = kill_one_worker_mid_trial(parent, study, args.storage)
        parent.wait()
    result = tally(study, args.storage)
    print(f"workers {args.workers} (killed pid {victim}), wall {time.time() - started:.0f} s, "
          f"trials {result['states']}, failed by heartbeat and retried {result['retried']}, "
          f"lost {result['lost']}, measured twice {result['measured_twice']}, "
          f"served from an earlier trial {result['served_from_earlier_trial']}, exit {parent.returncode}; log {root}/search.log")


if __name__ == "__main__":
    main()
