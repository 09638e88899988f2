"""What a trial measures: the first candidate a new study queues (the largest sub-config), the
sampling of architecture, runtime, quantization and runtime knobs, and the search for a
finished (or running) twin so that one candidate is not measured twice."""

from __future__ import annotations

import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgenas.config import SearchConfig
from edgenas.runtime.backends import get_backend
from edgenas.search.space import SearchSpace
from edgenas.search.study.objectives import RESULT_ATTR
from edgenas.types import Candidate


#: the max sub-config is first measured in each backend's mode here, where the config offers it: quick to
#: build for a large model and close to fp32 in accuracy
FIRST_MODES = {"onnxruntime": "dynamic_int8", "tflite": "dynamic_int8", "executorch": "dynamic_int8"}


def start_with_the_max(study: optuna.Study, space: SearchSpace, config: SearchConfig) -> None:
    """A new study measures the largest sub-config first, once in each backend that offers its first mode:
    the front's accuracy anchor, which a sampler would rarely draw by chance, and the same model timed on
    every runtime, so the sampler learns from its first trials which runtime is fast on this target (one
    anchor in ONNX Runtime alone left TPE sampling it for 40 trials where TFLite ran 3x faster; RESULTS 3)."""
    if study.trials:
        return
    arch = {key: getattr(space.max_arch(), key) for key in space.free_keys}
    offered = [(runtime, mode) for runtime, mode in FIRST_MODES.items()
               if mode in config.candidates.runtimes.get(runtime, [])]
    for runtime, mode in offered:
        study.enqueue_trial(arch | {"runtime": runtime, f"quantization_{runtime}": mode})
    if not offered:  # the other knobs are sampled
        study.enqueue_trial(arch)


def suggest_candidate(trial: optuna.Trial, space: SearchSpace, config: SearchConfig) -> Candidate:
    """Sample architecture, runtime, quantization and runtime knobs for one trial."""
    arch = space.arch({key: trial.suggest_categorical(key, list(space.choices[key])) for key in space.free_keys})
    candidates = config.candidates
    runtime = trial.suggest_categorical("runtime", sorted(candidates.runtimes))
    # one parameter per runtime: Optuna needs a fixed choice list for each name
    quantization = trial.suggest_categorical(f"quantization_{runtime}", candidates.runtimes[runtime])
    seq_len = trial.suggest_categorical("seq_len", candidates.seq_lens)
    threads = trial.suggest_categorical("threads", candidates.threads)
    knobs = {knob.name: trial.suggest_categorical(knob.name, candidates.choices(knob.name))
             for knob in get_backend(runtime).knobs}
    return Candidate(arch, runtime, quantization, seq_len, threads, knobs)


def find_duplicate(study: optuna.Study, params: dict[str, Any], number: int | None = None,
                   wait_s: float = 0.0, poll_s: float = 1.0) -> FrozenTrial | None:
    """A finished trial with exactly these parameters, so it is not measured twice.

    If another worker is measuring the same candidate right now, wait up to
    wait_s for its result instead of measuring it a second time.
    """
    deadline = time.monotonic() + wait_s
    while True:
        twins_running = False
        for past in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if past.number == number or past.params != params:
                continue
            if past.state == TrialState.COMPLETE and RESULT_ATTR in past.user_attrs:
                return past
            # the lower-numbered twin measures, the others wait: no two workers wait on each other
            earlier = number is None or past.number < number
            twins_running = twins_running or (past.state == TrialState.RUNNING and earlier)
        if not twins_running or time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)
