"""`edgenas search --workers N`: N local processes on one study, each a full worker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console

from edgenas.config import SearchConfig
from edgenas.errors import EdgenasError
from edgenas.search.study.storage import redact
from edgenas.search.study.runner import (
    SearchOptions, TrialCap, finished_study, open_search, print_summary, train_task_supernet,
)

STORAGE_ENV = "EDGENAS_STORAGE"  # the URL travels in the environment, never on a command line


def worker_command(options: SearchOptions, index: int, config_path: Path | None, device: str | None = None,
                   recipe: str | None = None) -> list[str]:
    """The `edgenas search` command line of worker `index` (its own sampler seed)."""
    seed = None if options.seed is None else options.seed + index
    command = [sys.executable, "-m", "edgenas.cli", "search", *replace(options, seed=seed).flags(),
               "--no-progress", "--worker"]
    for flag, value in (("--config", config_path), ("--device", device), ("--recipe", recipe)):
        if value:
            command += [flag, str(value)]
    return command


def _relay(process: subprocess.Popen, prefix: str, console: Console) -> None:
    """Copy a worker's output lines to ours, tagged with the worker."""
    for line in process.stdout:  # type: ignore[union-attr]
        console.out(f"{prefix} {line.rstrip()}", highlight=False)


def run_workers(config: SearchConfig, options: SearchOptions, workers: int, config_path: Path | None,
                console: Console) -> optuna.Study:
    """Create the study and train the supernet once, then run `workers` processes until the cap."""
    config, inputs, url, study = open_search(config, options, console)
    console.print(f"[bold]study[/] {options.study_name} on {redact(url)}: {workers} workers")
    if TrialCap(options.n_trials).reached(study):
        return finished_study(study, config, options, console)
    # trained once here; workers load it from the cache
    train_task_supernet(config, inputs.space, inputs.splits, inputs.tokenizer, console, options.progress)
    env = {**os.environ, STORAGE_ENV: url, "PYTHONUNBUFFERED": "1"}
    processes = []
    for index in range(workers):
        process = subprocess.Popen(
            worker_command(options, index, config_path, config.device, config.recipe), env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        relay = threading.Thread(target=_relay, args=(process, f"[w{index}]", console), daemon=True)
        relay.start()
        processes.append((process, relay))
    started = time.perf_counter()
    codes = []
    for process, relay in processes:
        codes.append(process.wait())
        relay.join(timeout=5)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    console.print(f"[bold]done[/] {done} trials by {workers} workers in {time.perf_counter() - started:.0f} s")
    print_summary(study, config, console)
    failed = [i for i, code in enumerate(codes) if code != 0]
    if failed and done < options.n_trials:
        raise EdgenasError(f"workers {failed} exited with an error and the study has {done}/{options.n_trials} trials")
    return study
