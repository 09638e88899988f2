"""`edgenas search`: prepare everything once, then run the Optuna study with live progress."""

from __future__ import annotations

import logging
import time
from importlib import import_module
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterator

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from edgenas.config import SearchConfig
from edgenas.errors import EdgenasError
from edgenas.paths import cache_root
from edgenas.search.study.candidates import start_with_the_max
from edgenas.search.study.objectives import FAIL_ATTR, pareto_trials, result_of
from edgenas.search.study.storage import (
    ARTIFACTS_ATTR, StudyError, default_storage, make_sampler, open_storage, open_study, redact, scrub, study_dirs,
)
from edgenas.search.study.predictor import PREDICTION_ATTR
from edgenas.search.study.prescreen import Prescreen
from edgenas.search.study.refine import REFINED_ATTR, FrontRefiner
from edgenas.search.study.trial import (
    TrialContext, compile_cache_dir, inherited_score, run_trial, write_encoded_sets,
)
from edgenas.search.study import verdict
from edgenas.tables import narrow_table, number_column, runtime_mode, text_column
from edgenas.types import Candidate, arch_legend

if TYPE_CHECKING:
    from edgenas.runtime.measurement import Measurement
    from edgenas.runtime.targets import Target
    from edgenas.search.data.splits import TaskSplits, Tokenizer
    from edgenas.search.space import SearchSpace
    from edgenas.search.training.supernet import MobileBertSupernet
    from edgenas.search.training.train import TrainingSet


def _flag(flag: str, default: Any) -> Any:
    return field(default=default, metadata={"flag": flag})


@dataclass
class SearchOptions:
    """The command-line flags users script against; a field with a `flag` is passed on to --workers."""

    out_dir: Path = _flag("--out", Path("edgenas-out"))
    storage: str | None = None  # travels to workers in EDGENAS_STORAGE, never on a command line
    study_name: str = _flag("--study", "edgenas-demo")
    n_trials: int = _flag("--n-trials", 15)
    refine: int = _flag("--refine", 0)  # the last n_trials that step from the front (search/study/refine.py)
    timeout: float | None = _flag("--timeout", None)
    sampler: str = _flag("--sampler", "tpe")
    seed: int | None = _flag("--seed", 0)
    artifacts: Path | None = _flag("--artifacts", None)
    supernet: Path | None = _flag("--supernet", None)  # a portable supernet directory (`edgenas train`)
    progress: bool = True
    summary: bool = True  # the final Pareto table (a --workers parent prints one for all)

    def flags(self) -> list[str]:
        """The `edgenas search` flags that give these options (those set, the storage left out)."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if "flag" in f.metadata and value is not None:
                out += [f.metadata["flag"], str(value)]
        return out


class TrialCap:
    """At most n completed trials across all workers, checked before each start; as a guard,
    stop after n (at least 5) trials failed since this run began."""

    def __init__(self, n_trials: int, poll_s: float = 2.0) -> None:
        self.n_trials = n_trials
        self.poll_s = poll_s
        self.failed_before: int | None = None  # failures already in the study: a rerun may retry after them

    def counts(self, study: optuna.Study) -> tuple[int, int, int]:
        """Completed (or pruned) and running trials in the shared storage, and failures since this run began.

        One read of the trials: counted from separate reads, a trial that finishes in between
        would be in neither count, and the cap would look as if it had room.
        """
        states = [t.state for t in study.get_trials(deepcopy=False)]
        failed = states.count(TrialState.FAIL)
        if self.failed_before is None:
            self.failed_before = failed
        done = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
        return done, states.count(TrialState.RUNNING), failed - self.failed_before

    def reached(self, study: optuna.Study) -> bool:
        """Whether the study has its n completed trials (or this run too many failures)."""
        complete, _, failed = self.counts(study)
        return self._full(complete, failed)

    def _full(self, complete: int, failed: int) -> bool:
        return complete >= self.n_trials or failed >= max(self.n_trials, 5)

    def room(self, study: optuna.Study, deadline: float | None = None) -> bool:
        """Whether to start another trial; waits while trials other workers run could still fill the cap."""
        while True:
            complete, running, failed = self.counts(study)
            if self._full(complete, failed):
                return False
            if complete + running < self.n_trials:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_s)
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial must not hold the cap forever

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.reached(study):
            study.stop()


def optimize_capped(study: optuna.Study, objective: Any, cap: TrialCap, timeout: float | None = None,
                    max_starts: int | None = None, before_each: Callable[[optuna.Study], None] | None = None,
                    **optimize_kwargs: Any) -> int:
    """Run one trial at a time while the cap has room; stop starting trials after `timeout` s. `before_each`
    may queue the next trial's parameters.

    Returns the number of trials started here.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    started = 0
    while (max_starts is None or started < max_starts) and cap.room(study, deadline):
        if deadline is not None and time.monotonic() >= deadline:
            break
        if before_each is not None:
            before_each(study)
        study.optimize(objective, n_trials=1, **optimize_kwargs)
        started += 1
    return started


@dataclass
class TrainedTask:
    """A study's data, tokenizer, space and trained supernet (from cache after the first run)."""

    space: SearchSpace
    splits: TaskSplits
    tokenizer: Tokenizer
    supernet: MobileBertSupernet
    data: TrainingSet  # the supernet's training examples and the teacher's logits on them


def load_task_data(config: SearchConfig) -> tuple[SearchSpace, TaskSplits, Tokenizer]:
    """The search space, the data splits and the tokenizer a config names (loaded by the task's data module)."""
    from edgenas.search.space import load_space

    space = load_space(config.space)
    if config.init is not None:
        space = replace(space, init=config.init)
    splits, tokenizer = import_module(config.task.record.data_module).load_splits(config)
    return space, splits, tokenizer


def train_task_supernet(config: SearchConfig, space: SearchSpace, splits: TaskSplits, tokenizer: Tokenizer,
                        console: Console, progress: bool = True) -> tuple[MobileBertSupernet, TrainingSet]:
    """The study's supernet (trained, or from the cache) and its training set."""
    from edgenas.search.training.train import supernet_dir, train_supernet, training_set

    recipe = config.train_recipe()
    console.print(f"[bold]supernet[/] {space.name}: max {space.max_arch().short()}, {splits.name} data "
                  f"({len(splits.train)} train / {len(splits.dev)} dev), {recipe.steps} steps")
    cache = cache_root() / "supernets"
    net = train_supernet(space, splits, tokenizer, recipe, cache, progress=progress)
    return net, training_set(splits, tokenizer, recipe, supernet_dir(space, splits, tokenizer, recipe, cache))


def load_trained_task(config: SearchConfig, console: Console, progress: bool = True) -> TrainedTask:
    """Load data and tokenizer, then train the supernet or load it from the cache."""
    space, splits, tokenizer = load_task_data(config)
    supernet, data = train_task_supernet(config, space, splits, tokenizer, console, progress)
    return TrainedTask(space, splits, tokenizer, supernet, data)


@dataclass
class TaskInputs:
    """The target, space, data splits and tokenizer of a config, checked before any study exists."""

    target: Target
    space: SearchSpace
    splits: TaskSplits
    tokenizer: Tokenizer


def load_inputs(config: SearchConfig) -> TaskInputs:
    """Load (and so validate) what a search needs; bad inputs fail here, leaving no study behind."""
    from edgenas.runtime.targets import target_from_url

    target = target_from_url(config.measure.target)
    space, splits, tokenizer = load_task_data(config)
    return TaskInputs(target, space, splits, tokenizer)


def prepare_context(config: SearchConfig, options: SearchOptions, console: Console,
                    inputs: TaskInputs | None = None) -> TrialContext:
    """Everything trials share; the target is timed once before any training, so a bad one fails fast."""
    from edgenas.runtime.drift import DriftMonitor

    inputs = inputs or load_inputs(config)
    space, splits, tokenizer = inputs.space, inputs.splits, inputs.tokenizer
    _, work_dir = study_dirs(options.out_dir)
    vocab = trimmed_vocabulary(splits, tokenizer) if config.trim_vocab else None
    encoded = write_encoded_sets(splits, tokenizer, config, work_dir / "data", vocab)
    reference = reference_artifact(work_dir, config)
    measurer = DriftMonitor(inputs.target, reference, every=config.measure.reference_every)
    reference_ms = measurer.check_reference()
    console.print(f"[bold]target[/] {inputs.target.name}: reference model {reference_ms:.2f} ms")
    supernet, data = train_task_supernet(config, space, splits, tokenizer, console, options.progress)
    store = FileSystemArtifactStore(str(artifact_dir(options)))
    return TrialContext(
        config=config, space=space, supernet=supernet, data=data, splits=splits,
        tokenizer=tokenizer, encoded=encoded, measurer=measurer, artifact_store=store,
        compile_cache=compile_cache_dir(), work_dir=work_dir, vocab=vocab,
    )


def artifact_dir(options: SearchOptions) -> Path:
    """The study's artifact store: --artifacts, else `<out>/artifacts` beside the default storage."""
    return options.artifacts or study_dirs(options.out_dir)[0]


def trimmed_vocabulary(splits: TaskSplits, tokenizer: Tokenizer):
    """The VocabTrim of the tokens the training split uses."""
    from edgenas.search.data.vocab import VocabTrim

    return VocabTrim.from_texts(tokenizer, splits.train.documents())


REFERENCE_SEQ_LEN = 64


def reference_artifact(work_dir: Path, config: SearchConfig) -> Path:
    """A fixed small ONNX model (same in every study), timed at intervals to see a drifting machine."""
    import torch
    from transformers import MobileBertConfig, MobileBertForSequenceClassification

    from edgenas.compile import compile_artifact

    model_dir = work_dir / "reference-model"
    if not (model_dir / "config.json").exists():
        torch.manual_seed(0)
        reference_config = MobileBertConfig(
            vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
            intra_bottleneck_size=32, intermediate_size=128, embedding_size=32, num_feedforward_networks=1,
            num_labels=3,
        )
        MobileBertForSequenceClassification(reference_config).eval().save_pretrained(model_dir)
    artifact = compile_artifact(
        model_dir, "onnxruntime", "fp32", seq_len=REFERENCE_SEQ_LEN, cache_dir=compile_cache_dir(),
        timeout_s=config.measure.compile_timeout_s,
    )
    return artifact.path


def open_search(config: SearchConfig, options: SearchOptions,
                console: Console) -> tuple[SearchConfig, TaskInputs, str, optuna.Study]:
    """The config as it runs here, its inputs, the storage URL and the study, its first trial queued.

    Everything is checked before the study is created, so a bad input leaves no empty study;
    one search process and the parent of many workers open a study the same way.
    """
    quiet_libraries()
    config = runnable_here(config, console)
    inputs = load_inputs(config)
    if options.supernet is not None:
        config = adopt_supernet(config, options.supernet, inputs, console)
    url = options.storage or default_storage(options.out_dir)
    study = open_study(open_storage(url), options.study_name, config, make_sampler(options.sampler, options.seed))
    start_with_the_max(study, inputs.space, config)
    return config, inputs, url, study


def run_search(config: SearchConfig, options: SearchOptions, console: Console | None = None) -> optuna.Study:
    """Open (or resume) the study and run trials until the cap or the timeout; a study that
    already has its n completed trials only prints its Pareto front."""
    console = console or Console()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    config, inputs, url, study = open_search(config, options, console)
    console.print(f"[bold]study[/] {options.study_name} on {redact(url)} ({options.sampler} sampler)")
    cap = TrialCap(options.n_trials)
    if cap.reached(study):
        return finished_study(study, config, options, console)
    ctx = prepare_context(config, options, console, inputs)
    ctx.prescreen = Prescreen.for_study(config, ctx.space.family, ctx.vocab_size, inputs.target.name, url)
    record_study_attrs(study, ctx, options)
    reporter = TrialReporter(console, config, options.n_trials, enabled=options.progress)
    started = time.perf_counter()
    with reporter, storage_outage_is_an_error(url):
        optimize_capped(
            study, lambda trial: run_trial(trial, ctx), cap, timeout=options.timeout,
            max_starts=None if options.timeout else options.n_trials * 3,
            before_each=front_refiner(ctx, options, inputs.target.name),
            catch=(EdgenasError,), callbacks=[reporter, cap], gc_after_trial=True,
        )
    console.print(f"[bold]done[/] in {time.perf_counter() - started:.0f} s")
    require_completed_trials(study)
    if options.summary:
        print_summary(study, config, console)
    return study


def front_refiner(ctx: TrialContext, options: SearchOptions, target: str) -> FrontRefiner | None:
    """What queues the study's last `--refine` trials (None: the sampler chooses every trial)."""
    if not options.refine:
        return None
    return FrontRefiner(ctx.config, ctx.space, ctx.vocab_size, target, options.n_trials, options.refine,
                        partial(inherited_score, ctx))


def runnable_here(config: SearchConfig, console: Console) -> SearchConfig:
    """The config less the runtimes whose package is missing here, each skipped with its reason."""
    candidates, missing = config.candidates.installed()
    for name, why in missing.items():
        console.print(f"[yellow]skipping[/] {name}: {why}", highlight=False)
    return config.model_copy(update={"candidates": candidates}) if missing else config


def finished_study(study: optuna.Study, config: SearchConfig, options: SearchOptions, console: Console) -> optuna.Study:
    """A rerun of a study that has its trials: say so and show the front; no trial runs."""
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    console.print(f"[bold]done[/] study {study.study_name} already has {done} completed trials "
                  f"(--n-trials {options.n_trials}); raise --n-trials to run more")
    if options.summary:
        print_summary(study, config, console)
    return study


def record_study_attrs(study: optuna.Study, ctx: TrialContext, options: SearchOptions) -> None:
    """The baselines and the artifact store's directory, for report, export and the dashboard."""
    baselines = verdict.study_baselines(ctx.splits, ctx.config, cache_root() / "baselines")
    study.set_user_attr(verdict.BASELINES_ATTR, baselines)
    study.set_user_attr(ARTIFACTS_ATTR, str(artifact_dir(options).resolve()))


def print_summary(study: optuna.Study, config: SearchConfig, console: Console) -> None:
    """The Pareto table, the baselines under it, and a warning when the front does not beat them."""
    console.print(pareto_table(study, config))
    front = [result_of(t) for t in pareto_trials(study)]
    if not front:
        return
    best = max(front, key=lambda r: r.accuracy)
    warning = verdict.front_warning(study, best.accuracy, best.accuracy_n)
    if warning:
        console.print(f"[yellow]{warning}[/]", highlight=False)


def adopt_supernet(config: SearchConfig, directory: Path, inputs: TaskInputs, console: Console) -> SearchConfig:
    """The config with a portable supernet's recipe, once the directory is checked and in the cache."""
    from edgenas.search.training.portable import adopt_portable

    adopted = adopt_portable(directory, config, inputs.space, inputs.splits, inputs.tokenizer,
                             cache_root() / "supernets")
    console.print(f"[bold]supernet[/] from {directory} (matches the space, data and tokenizer)")
    return adopted


def train_only(config: SearchConfig, out: Path, console: Console, progress: bool = True) -> int:
    """`edgenas train`: the teacher and the supernet of a config, written to `out` as a portable directory."""
    from edgenas.search.training.portable import write_portable
    from edgenas.search.training.train import supernet_dir

    quiet_libraries()
    space, splits, tokenizer = load_task_data(config)
    train_task_supernet(config, space, splits, tokenizer, console, progress)
    recipe = config.train_recipe()
    run_dir = supernet_dir(space, splits, tokenizer, recipe, cache_root() / "supernets")
    return write_portable(run_dir, out, space, splits, tokenizer, recipe)


def require_completed_trials(study: optuna.Study) -> None:
    """A study with no completed trial ends in one line naming the last failure."""
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    reason = failed[-1].user_attrs.get(FAIL_ATTR, "see the trial lines above") if failed else "none ran"
    raise StudyError(f"no trial completed in study '{study.study_name}'; last failure: {reason}")


@contextmanager
def storage_outage_is_an_error(url: str) -> Iterator[None]:
    """A storage lost mid-study ends the run with one line; rerunning resumes it."""
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except OperationalError as exc:
        cause = scrub(str(exc).splitlines()[0], url)
        raise StudyError(f"lost the storage {redact(url)} ({cause}); rerun the same command to resume") from None


def quiet_libraries() -> None:
    """Our own bars and lines are the output; silence the libraries' own."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


class TrialReporter:
    """One line per finished trial and a bar for the whole study."""

    def __init__(self, console: Console, config: SearchConfig, total: int, enabled: bool = True) -> None:
        self.console = console
        self.config = config
        self.progress = Progress(
            TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, disable=not enabled,
        )
        self.task = self.progress.add_task("trials", total=total)

    def __enter__(self) -> "TrialReporter":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # soft wrap: a long failure reason stays one line in a log or a pipe (the terminal wraps it)
        self.console.print(trial_line(study, trial, self.console.width, score_name(self.config)), highlight=False,
                           soft_wrap=True)
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        self.progress.update(self.task, completed=done)


def score_name(config: SearchConfig) -> str:
    """The accuracy objective's name in tables: acc, or SQuAD's F1 for QA."""
    return config.task.record.score_short


def trial_line(study: optuna.Study, trial: FrozenTrial, width: int = 80, score: str = "acc") -> str:
    """#7   L2-H128-... onnx/dynamic_int8 seq64 t1 | acc 0.712 | 1.23 ms | 4.1 MB  pareto

    The figures go on a second, indented line when one line would be wider than `width`.
    """
    candidate = trial.user_attrs.get("candidate")
    what = f"#{trial.number:<3} ?"
    if candidate:
        c = Candidate.from_dict(candidate)
        what = f"#{trial.number:<3} {c.arch.short()} {runtime_mode(c.runtime, c.quantization)} seq{c.seq_len} t{c.threads}"
    if trial.state == TrialState.PRUNED:
        reason = (trial.user_attrs.get(PREDICTION_ATTR) or {}).get("reason", "pruned")
        return f"[yellow]{_two_lines(what, f'not compiled: {escape(reason)}', width)}[/]"
    if trial.state != TrialState.COMPLETE:
        reason = trial.user_attrs.get(FAIL_ATTR, trial.state.name.lower())
        return f"[red]{_two_lines(what, f'failed: {escape(reason)}', width)}[/]"
    result = result_of(trial)
    if result is None:
        return _two_lines(what, "no result recorded", width)
    on_front = any(best.number == trial.number for best in study.best_trials)
    dup = f" (= #{result.duplicate_of})" if result.duplicate_of is not None else ""
    if REFINED_ATTR in trial.user_attrs:
        dup += f" (from #{trial.user_attrs[REFINED_ATTR]['trial']})"
    per_question = result.measurement.ms_per_question
    per_question = f" ({per_question:.2f} ms/q)" if per_question is not None else ""  # QA
    figures = (f"{score} {verdict.accuracy_text(result.accuracy, result.accuracy_n)} | "
               f"{latency_text(result.measurement)} ms{per_question} | {result.size_mb:.1f} MB{dup}")
    mark = "  pareto" if on_front else ""
    line = _two_lines(what, figures + mark, width)
    return line.removesuffix(mark) + "  [green]pareto[/]" if mark else line


def _two_lines(what: str, figures: str, width: int) -> str:
    """`what | figures` on one line if it fits, else figures under it (a wrapped line would split a figure)."""
    line = f"{what} | {figures}"
    return line if len(line) <= width else f"{what}\n     {figures}"


NOISY_MARK = "~"
NOISY_NOTE = (f"{NOISY_MARK} latency still uncertain by more than 2 % after 4x the timed runs (a busy machine?): "
              "compare it with care, or time it again with `edgenas bench`")


def latency_text(measurement: Measurement) -> str:
    """The median latency in ms, marked when the measurement stayed noisy."""
    return f"{measurement.median_ms:.2f}" + (NOISY_MARK if measurement.noisy else "")


def pareto_table(study: optuna.Study, config: SearchConfig, baselines: bool = True) -> Group:
    """The feasible Pareto-optimal trials, fastest first, in 80 columns, and notes under them.

    Each candidate takes two lines, its architecture over its runtime/mode, so
    both show in full; a legend under the table spells out the architecture code,
    then a line names the baselines (unless `baselines` is False).
    """
    trials = pareto_trials(study)
    candidates = [Candidate.from_dict(t.user_attrs["candidate"]) for t in trials]
    table = narrow_table(f"Pareto front of {study.study_name}")
    number_column(table, "#", 2)
    text_column(table, "architecture\nruntime/mode")
    task = config.task.record
    # a space more than most values need
    numbers = {"seq": 4, task.score_short: 12, "torch": 6, "ms": 7, task.pareto_time.heading: task.pareto_time.width,
               "MB": 6}
    for heading, width in numbers.items():
        number_column(table, heading, width)
    results = [result_of(t) for t in trials]
    for trial, c, r in zip(trials, candidates, results):
        table.add_row(
            str(trial.number), f"{c.arch.short()}\n{runtime_mode(c.runtime, c.quantization)}", str(c.seq_len),
            verdict.accuracy_text(r.accuracy, r.accuracy_n), f"{r.torch_accuracy:.3f}", latency_text(r.measurement),
            task.pareto_time.format.format(getattr(r.measurement, task.pareto_time.key)), f"{r.size_mb:.2f}",
        )
    notes = [arch_legend([c.arch.short() for c in candidates])] if candidates else []
    notes += [task.pareto_note] if task.pareto_note and candidates else []
    notes += [NOISY_NOTE] if any(r.measurement.noisy for r in results) else []
    recorded = study.user_attrs.get(verdict.BASELINES_ATTR)
    notes += [verdict.baselines_line(recorded)] if baselines and recorded else []
    return Group(table, *(Text(note) for note in notes))
