"""The Optuna study: sample a candidate, inherit weights, compile, measure on the target."""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from edgenas.config import SearchConfig
from edgenas.errors import EdgenasError
from edgenas.paths import cache_root
from edgenas.runtime.backends import get_backend
from edgenas.search.space import SearchSpace
from edgenas.search.study.verdict import eval_rows
from edgenas.search.uncertainty import wilson_interval
from edgenas.types import Candidate

SAMPLERS = ("tpe", "nsga2", "gp", "random")
RESULT_ATTR = "result"
FAIL_ATTR = "fail_reason"
ARTIFACTS_ATTR = "artifact_dir"  # the artifact store's directory, for `edgenas report`'s dashboard command
#: the objectives' names as Optuna metric names (the dashboard's axis labels)
METRIC_NAMES = {"accuracy": "accuracy", "latency": "latency_ms", "size": "size_mb"}


class StudyError(EdgenasError):
    """A study that cannot be opened or continued as asked."""


# ---------------------------------------------------------------- storage and sampler


def default_storage(out_dir: Path) -> str:
    """The embedded default: one SQLite file in the output directory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(out_dir / 'edgenas.db').resolve()}"


def open_storage(url: str, heartbeat_s: int | None = None, max_retry: int = 2, attempts: int = 5,
                 first_delay_s: float = 0.5, must_exist: bool = False) -> RDBStorage:
    """An RDB storage with heartbeats (a dead worker's trial is failed and retried).

    A storage that is briefly unreachable is retried with exponential back-off;
    a wrong password is not retried. Errors never show the password. Readers
    pass must_exist, so a mistyped SQLite path is reported, not created.
    """
    heartbeat_s = heartbeat_s or int(os.environ.get("EDGENAS_HEARTBEAT_S", "20"))
    database = sqlite_file(url)
    if database is not None:
        if must_exist and not database.is_file():
            raise StudyError(f"no study database at {database}")
        database.parent.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return RDBStorage(
                url,
                heartbeat_interval=heartbeat_s,
                grace_period=heartbeat_s * 3,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                engine_kwargs=_engine_kwargs(url),
            )
        except Exception as exc:  # sqlalchemy raises many types; the user needs one line
            cause = scrub(_first_line(exc), url)
            if attempt == attempts or "authentication failed" in cause or not _transient(exc):
                raise StudyError(f"cannot open storage {redact(url)}: {cause}") from None
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (None for other databases and in-memory SQLite)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return Path(parsed.database).expanduser()
    return None


def _transient(exc: BaseException) -> bool:
    """Connection-level failures worth retrying (not bad URLs or missing drivers)."""
    from sqlalchemy.exc import OperationalError

    return isinstance(exc, OperationalError)


def scrub(text: str, url: str) -> str:
    """Remove the URL's password from any message."""
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:
        return text
    return text.replace(str(password), "***") if password else text


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def redact(url: str) -> str:
    """A storage URL with its password replaced, safe to print or log."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """One of Optuna's samplers by name; constraints come from trial.set_constraint."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True, constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise StudyError(f"unknown sampler '{name}' (choose from {', '.join(SAMPLERS)})")


def open_study(storage: RDBStorage, name: str, config: SearchConfig, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create the study or resume it; refuse to resume one made with another config."""
    config_json = config.model_dump_json()
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, directions=config.directions(), sampler=sampler, load_if_exists=True
        )
    except Exception as exc:
        raise StudyError(f"cannot open study '{name}': {_first_line(exc)}") from None
    stored = study.user_attrs.get("config")
    if stored is None:
        study.set_user_attr("config", config_json)
        study.set_user_attr("objectives", config.objectives)
        study.set_metric_names([METRIC_NAMES[name] for name in config.objectives])
    elif _identity(json.loads(stored)) != _identity(json.loads(config_json)):
        raise StudyError(f"study '{name}' was created with a different config; use another --study name")
    return study


# ---------------------------------------------------------------- candidates


#: the max sub-config is first measured in this mode when the config offers it: the quickest to build
#: for a large model and close to fp32 in accuracy
FIRST_MODE = ("onnxruntime", "dynamic_int8")


def start_with_the_max(study: optuna.Study, space: SearchSpace, config: SearchConfig) -> None:
    """A new study measures the largest sub-config first: the front's accuracy anchor, which a
    sampler would rarely draw by chance (the other knobs are sampled)."""
    if study.trials:
        return
    params = {key: getattr(space.max_arch(), key) for key in space.free_keys}
    runtime, mode = FIRST_MODE
    if mode in config.candidates.runtimes.get(runtime, []):
        params |= {"runtime": runtime, f"quantization_{runtime}": mode}
    study.enqueue_trial(params)


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two configs one study: everything but where training runs."""
    return {key: value for key, value in config.items() if key != "device"}


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


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible Pareto front (best_trials honours constraints), fastest first, each candidate once."""
    trials = [t for t in study.best_trials
              if RESULT_ATTR in t.user_attrs and "duplicate_of" not in t.user_attrs[RESULT_ATTR]]
    return sorted(trials, key=lambda t: t.user_attrs[RESULT_ATTR]["median_ms"])


# ---------------------------------------------------------------- data prepared once per study


@dataclass
class EncodedSets:
    """The npz files a trial hands to compile/ and runtime/, per sequence length."""

    eval: dict[int, Path] = field(default_factory=dict)
    parity: dict[int, Path] = field(default_factory=dict)
    calibration: dict[int, Path] = field(default_factory=dict)


def write_encoded_sets(splits, tokenizer, config: SearchConfig, directory: Path, vocab=None) -> EncodedSets:
    """Tokenize the dev subset (eval, parity) and train samples (calibration) for each seq_len
    (in the trimmed vocabulary's ids when `vocab`, a VocabTrim, is given)."""
    from edgenas.search.data.tokenizer import encode

    directory.mkdir(parents=True, exist_ok=True)
    measure = config.measure
    dev_rows = eval_rows(splits, config)
    rng = np.random.default_rng(config.task.split_seed + 1)
    calib_rows = np.sort(rng.permutation(len(splits.train))[: measure.calibration_examples])
    sets = EncodedSets()
    for seq_len in config.candidates.seq_lens:
        dev = encode(tokenizer, [splits.dev.texts[i] for i in dev_rows], seq_len)
        dev["labels"] = splits.dev.labels[dev_rows]
        calib = encode(tokenizer, [splits.train.texts[i] for i in calib_rows], seq_len)
        if vocab is not None:
            dev, calib = vocab.remap(dev), vocab.remap(calib)
        sets.eval[seq_len] = _save_npz(directory / f"eval-{seq_len}.npz", dev)
        parity = {k: v[: measure.parity_examples] for k, v in dev.items()}
        sets.parity[seq_len] = _save_npz(directory / f"parity-{seq_len}.npz", parity)
        sets.calibration[seq_len] = _save_npz(directory / f"calibration-{seq_len}.npz", calib)
    return sets


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


# ---------------------------------------------------------------- one trial


class PhaseClock:
    """Seconds spent in each phase of one trial."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


@dataclass
class TrialContext:
    """What every trial of a study shares: supernet, data, target, stores."""

    config: SearchConfig
    space: SearchSpace
    supernet: Any
    data: Any  # the supernet's TrainingSet (per-candidate fine-tunes distil from its teacher logits)
    splits: Any
    tokenizer: Any
    encoded: EncodedSets
    measurer: Any  # a runtime Target or DriftMonitor: .measure(artifact, data, **knobs) -> dict
    artifact_store: FileSystemArtifactStore
    compile_cache: Path
    work_dir: Path
    vocab: Any = None  # a VocabTrim when config.trim_vocab: candidates keep only its rows


def objective_values(config: SearchConfig, result: dict[str, Any]) -> list[float]:
    """The study's objectives in config order, from a trial's result record."""
    picks = {"accuracy": result["accuracy"], "latency": result["median_ms"], "size": result["size_mb"]}
    return [float(picks[name]) for name in config.objectives]


def set_constraints(trial: optuna.Trial, config: SearchConfig, result: dict[str, Any]) -> None:
    """Budgets as Optuna constraints: feasible when every value is <= 0."""
    budgets = config.budgets
    if budgets.max_latency_ms is not None:
        trial.set_constraint("latency", result["median_ms"] - budgets.max_latency_ms)
    if budgets.max_size_mb is not None:
        trial.set_constraint("size", result["size_mb"] - budgets.max_size_mb)
    if budgets.min_accuracy is not None:
        trial.set_constraint("accuracy", budgets.min_accuracy - result["accuracy"])


def run_trial(trial: optuna.Trial, ctx: TrialContext) -> list[float]:
    """Sample, inherit, compile, measure and record one candidate."""
    candidate = suggest_candidate(trial, ctx.space, ctx.config)
    trial.set_user_attr("candidate", candidate.to_dict())
    wait_s = ctx.config.measure.compile_timeout_s + 120  # a twin's compile and measurement
    duplicate = find_duplicate(trial.study, trial.params, trial.number, wait_s=wait_s)
    if duplicate is not None:
        result = dict(duplicate.user_attrs[RESULT_ATTR], duplicate_of=duplicate.number)
        trial.set_user_attr(RESULT_ATTR, result)
        set_constraints(trial, ctx.config, result)
        return objective_values(ctx.config, result)
    clock = PhaseClock()
    try:
        result = _measure_candidate(trial, candidate, ctx, clock)
    except EdgenasError as exc:
        trial.set_user_attr(FAIL_ATTR, str(exc))
        trial.set_user_attr("phases", clock.seconds)
        raise
    set_constraints(trial, ctx.config, result)
    return objective_values(ctx.config, result)


def _measure_candidate(trial: optuna.Trial, candidate: Candidate, ctx: TrialContext, clock: PhaseClock) -> dict[str, Any]:
    from edgenas.compile import compile_artifact
    from edgenas.search.training.loop import accuracy as evaluate_accuracy
    from edgenas.search.training.train import finetune_subnet

    seq_len = candidate.seq_len
    with tempfile.TemporaryDirectory(dir=ctx.work_dir, prefix=f"trial-{trial.number}-") as tmp:
        model_dir = Path(tmp) / "model"
        with clock.phase("extract"):
            if ctx.config.finetune_steps:
                recipe = ctx.config.recipe()
                model = finetune_subnet(ctx.supernet, candidate.arch, ctx.data, steps=ctx.config.finetune_steps,
                                        threads=recipe.threads, device=recipe.device)
            else:
                model = ctx.supernet.extract(candidate.arch)
            if ctx.vocab is not None:
                ctx.vocab.trim_model(model)
            model.save_pretrained(model_dir)
        with clock.phase("torch_eval"):
            eval_set = load_npz(ctx.encoded.eval[seq_len])
            labels = eval_set.pop("labels")
            torch_accuracy = evaluate_accuracy(model, eval_set, labels)
        with clock.phase("compile"):
            artifact = compile_artifact(
                model_dir,
                candidate.runtime,
                candidate.quantization,
                seq_len=seq_len,
                calibration=ctx.encoded.calibration[seq_len],
                check_data=ctx.encoded.parity[seq_len],
                cache_dir=ctx.compile_cache,
                timeout_s=ctx.config.measure.compile_timeout_s,
            )
        with clock.phase("measure"):
            measurement = ctx.measurer.measure(
                artifact.path,
                ctx.encoded.eval[seq_len],
                threads=candidate.threads,
                **candidate.knobs,
                warmup=ctx.config.measure.warmup,
                runs=ctx.config.measure.runs,
            )
        with clock.phase("store"):
            artifact_id = upload_artifact(
                artifact_store=ctx.artifact_store, file_path=str(artifact.path), study_or_trial=trial
            )
    result = {
        **{k: measurement[k] for k in measurement if k not in ("accuracy",)},
        "accuracy": float(measurement["accuracy"]),
        "accuracy_n": int(len(labels)),  # dev examples scored: the accuracy's uncertainty follows from it
        "accuracy_ci95": list(wilson_interval(float(measurement["accuracy"]), len(labels))),
        "torch_accuracy": float(torch_accuracy),
        "size_mb": artifact.meta["size_bytes"] / 1e6,
        "parity": artifact.meta.get("parity"),
        "artifact_id": artifact_id,
        "artifact_sha256": artifact.meta.get("sha256"),
        "artifact_meta": artifact.meta,
        "compile_cached": bool(artifact.meta.get("cached")),
    }
    trial.set_user_attr(RESULT_ATTR, result)
    trial.set_user_attr("phases", clock.seconds)
    return result


# ---------------------------------------------------------------- small helpers


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def study_dirs(out_dir: Path) -> tuple[Path, Path]:
    """The artifact store and scratch directories beside the default storage."""
    artifacts = out_dir / "artifacts"
    work = out_dir / "work"
    artifacts.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    return artifacts, work


def compile_cache_dir() -> Path:
    return cache_root() / "artifacts"
