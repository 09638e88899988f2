"""`edgenas export`: Pareto trials -> fine-tuned, recompiled, re-measured model directories.

A model directory holds the transformers weights, config (with the label map)
and tokenizer; model.onnx and/or model.tflite; the tokenized data it was scored
on (data/*.npz, reusable with `edgenas bench --data`); metrics.json; README.md.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial
from rich.console import Console

from edgenas.config import SearchConfig
from edgenas.paths import cache_root
from edgenas.errors import EdgenasError
from edgenas.runtime.predict import ARTIFACT_FILES
from edgenas.search.study.objectives import (
    RESULT_ATTR, accuracy_ties, export_floor_miss, most_accurate, pareto_trials, reference_point, spread_over_front,
)
from edgenas.search.study.trial import calibration_rows, compile_cache_dir, load_npz, torch_scores
from edgenas.search.study.verdict import BASELINE_NAMES
from edgenas.search.uncertainty import wilson_interval
from edgenas.search.results.report import completed, load_study
from edgenas.runtime.backends import PER_BATCH, get_backend
from edgenas.runtime.tasks import Task, get_task
from edgenas.types import Candidate

if TYPE_CHECKING:
    import torch

    from edgenas.runtime.measurement import Measurement
    from edgenas.runtime.targets import Target
    from edgenas.search.data.splits import TaskSplits, Tokenizer
    from edgenas.search.study.runner import TrainedTask


@dataclass
class ExportOptions:
    """The `edgenas export` flags."""

    out_dir: Path
    trials: str = "pareto"
    max_models: int | None = None  # of the front: those that keep the most of its hypervolume
    steps: int | None = None  # default: the study recipe's finetune_steps
    batch_size: int = 32
    other_runtime: bool = False
    target: str | None = None  # default: the study's measurement target
    progress: bool = True
    trim_vocab: bool = False  # also when the study's config asks for it
    device: str | None = None  # where the fine-tune runs (default: the study config's)
    questions: int = 2000  # QA: dev questions scored (a seeded subset; 2000 give F1 within about 1.5 points)

    def finetune_steps(self, config: SearchConfig) -> int:
        """The fine-tune steps of each exported model: --steps, else the study recipe's."""
        return config.train_recipe().finetune_steps if self.steps is None else self.steps


@contextmanager
def timed(seconds: dict[str, float], phase: str) -> Iterator[None]:
    """Add the wall seconds of the block to seconds[phase]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[phase] += time.perf_counter() - start


def other_builds(runtime: str, mode: str, console: Console) -> list[tuple[str, str]]:
    """Every other backend of the catalog with its mode nearest to runtime/mode; one not installed is skipped."""
    builds = []
    for name, nearest in get_backend(runtime).mode(mode).nearest.items():
        why = get_backend(name).missing()
        if why:
            console.print(f"  [yellow]skipping[/] {name}: {why}", highlight=False)
        else:
            builds.append((name, nearest))
    return builds


def select_trials(study: optuna.Study, spec: str) -> list[FrozenTrial]:
    """'pareto' (the feasible front) or a comma list of trial numbers of completed trials."""
    if spec.strip() == "pareto":
        chosen = pareto_trials(study)
        if not chosen:
            raise EdgenasError(f"study '{study.study_name}' has no feasible Pareto trials")
        return chosen
    by_number = {t.number: t for t in completed(study)}
    chosen = []
    for part in spec.split(","):
        try:
            number = int(part)
        except ValueError:
            raise EdgenasError(f"--trials: expected 'pareto' or numbers like 3,7,12, got {spec!r}") from None
        if number not in by_number:
            raise EdgenasError(f"trial {number} of study '{study.study_name}' is not a completed trial")
        chosen.append(by_number[number])
    return chosen


def write_data(splits: TaskSplits, tokenizer: Tokenizer, config: SearchConfig, seq_len: int, directory: Path,
               questions: int = 2000) -> dict[str, Path]:
    """Tokenized dev, test, calibration and parity sets at seq_len, as .npz files (QA: no test set;
    `questions` dev questions, a seeded subset)."""
    directory.mkdir(parents=True, exist_ok=True)
    measure = config.measure
    sets = splits.measurement_sets(tokenizer, seq_len, splits.export_rows(questions, config.task.split_seed),
                                   calibration_rows(splits, config, seed_offset=0), measure.parity_examples,
                                   measure.calibration_examples, with_test=True)
    return _save_sets(sets, directory)


def _save_sets(sets: dict[str, dict], directory: Path) -> dict[str, Path]:
    paths = {}
    for name, arrays in sets.items():
        paths[name] = directory / f"{name}.npz"
        np.savez(paths[name], **arrays)
    return paths


def compile_into(model_dir: Path, runtime: str, mode: str, seq_len: int, data: dict[str, Path],
                 timeout_s: float) -> dict[str, Any]:
    """Compile the directory's weights for runtime/mode and copy the artifact beside them; its meta."""
    from edgenas.compile import compile_artifact

    artifact = compile_artifact(model_dir, runtime, mode, seq_len=seq_len, calibration=data["calibration"],
                                check_data=data["parity"], cache_dir=compile_cache_dir(), timeout_s=timeout_s)
    shutil.copyfile(artifact.path, model_dir / ARTIFACT_FILES[runtime])
    return artifact.meta


def measure_artifact(target: Target, path: Path, data: dict[str, Path], split: str, candidate: Candidate,
                     config: SearchConfig) -> Measurement | None:
    """One split through the artifact on the target with the trial's knobs: dev timed as the search times it,
    test scored in one pass (None where the export has no test split: SQuAD's is not public, so its dev set
    is the benchmark). Each split is scored at batch 1 by as many processes as the target's cores hold."""
    if split not in data:
        return None
    knobs = {"threads": candidate.threads, **candidate.knobs}
    timing = {"warmup": config.measure.warmup, "runs": config.measure.runs} if split == "dev" else {"warmup": 0, "runs": 1}
    # the whole split is scored after the timing, so every core of the target may take a share of it
    return target.measure(path, data[split], **timing, **knobs, score_jobs=0)


def measurement_record(dev: Measurement, test: Measurement | None) -> dict[str, Any]:
    """metrics.json's record of an artifact's measurement: the dev one, its score also as dev_accuracy,
    and the test score beside it."""
    record = {**dev.to_json(), "dev_accuracy": dev.accuracy}
    if test is not None:
        record |= {"test_accuracy": test.accuracy, "n_test": test.n_eval}
    return record


def export_trial(trial: FrozenTrial, trained: TrainedTask, config: SearchConfig, options: ExportOptions, target: Target,
                 console: Console, study_name: str = "", finetuned: dict | None = None,
                 selected_as: str | None = None) -> Path | None:
    """Fine-tune, save, compile, measure and document one trial; returns its model directory. `finetuned`
    keeps the fine-tuned weights per architecture and sequence length across the trials of one export;
    `selected_as` says why the trial was chosen (default: the front, or asked for by number).

    Exporting the front (`--trials pareto`) under `budgets.min_accuracy`, the floor is checked again on the
    export's dev set (all of it for a classifier; export_floor_miss): a model that misses it in its own
    runtime is removed and None returned; another runtime's build that misses it is left out, and named
    under not_exported in metrics.json and the card."""
    finetuned = {} if finetuned is None else finetuned
    candidate = Candidate.from_dict(trial.user_attrs["candidate"])
    seq_len = candidate.seq_len
    model_dir = options.out_dir / f"trial-{trial.number}-{candidate.runtime}-{candidate.quantization}"
    if model_dir.exists():
        shutil.rmtree(model_dir)  # a rerun replaces the directory rather than mixing two exports
    model_dir.mkdir(parents=True)
    console.print(f"[bold]export[/] trial {trial.number}: {candidate.arch.short()} "
                  f"{candidate.runtime}/{candidate.quantization} seq{seq_len} -> {model_dir}")
    seconds: dict[str, float] = defaultdict(float)  # where the export's time went, for metrics.json
    with timed(seconds, "data"):
        data = write_data(trained.splits, trained.tokenizer, config, seq_len, model_dir / "data", options.questions)
    dev = load_npz(data["dev"])
    key = (candidate.arch, seq_len)
    if key not in finetuned:  # front trials that differ only in runtime or quantization share one fine-tune
        with timed(seconds, "finetune"):
            finetuned[key] = finetune(trained, candidate, config, options, dev)
    model, kept, dev_before, dev_after = finetuned[key]
    names = list(trained.splits.label_names)
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {name: i for i, name in enumerate(names)}
    vocabulary = {"kept": len(trained.tokenizer), "of": len(trained.tokenizer)}
    torch_acc = {"dev_accuracy": max(dev_before, dev_after)}
    if options.trim_vocab or config.trim_vocab:
        data, vocabulary = save_trimmed(copy.deepcopy(model), trained, config, seq_len, model_dir)  # trims in place
        torch_acc = {}  # the trimmed model is scored on the data its own tokenizer wrote
    else:
        model.save_pretrained(model_dir)
        trained.tokenizer.save_pretrained(model_dir)
    with timed(seconds, "torch scoring"):
        torch_acc |= {f"{split}_accuracy": torch_scores(model, load_npz(data[split]))["accuracy"]
                      for split in ("dev", "test") if split in data and f"{split}_accuracy" not in torch_acc}
    builds = [(candidate.runtime, candidate.quantization)]
    if options.other_runtime:
        builds += other_builds(candidate.runtime, candidate.quantization, console)
    baselines = trained.splits.baselines(trained.splits.export_rows(options.questions, config.task.split_seed),
                                         cache_root() / "baselines")
    checks_floor = options.trials.strip() == "pareto"
    artifacts, dropped = {}, {}
    for runtime, mode in builds:
        with timed(seconds, "compile"):
            meta = compile_into(model_dir, runtime, mode, seq_len, data, config.measure.compile_timeout_s)
        path = model_dir / ARTIFACT_FILES[runtime]
        with timed(seconds, "measure"):
            dev_measured = measure_artifact(target, path, data, "dev", candidate, config)
        miss = checks_floor and export_floor_miss(config, baselines, dev_measured.accuracy, _scored(dev))
        if miss:  # decided on dev alone, before the test split is run at all
            console.print(f"  [yellow]not exported[/]: {runtime}/{mode} dev {config.task.score_name} "
                          f"{dev_measured.accuracy:.4f} on {_scored(dev)} dev examples {miss}", highlight=False)
            if runtime == candidate.runtime:
                shutil.rmtree(model_dir)
                return None
            path.unlink()  # another runtime's build that loses more to quantization than the trial's own
            dropped[f"{runtime}/{mode}"] = f"dev {dev_measured.accuracy:.4f} {miss}"
            continue
        with timed(seconds, "measure"):
            test_measured = measure_artifact(target, path, data, "test", candidate, config)
        artifacts[runtime] = {"file": path.name, "mode": mode, "size_mb": meta["size_bytes"] / 1e6,
                              "sha256": meta.get("sha256"), "parity": meta.get("parity"),
                              "measurement": measurement_record(dev_measured, test_measured),
                              "compile": {k: meta.get(k) for k in ("converter", "opset", "versions", "compile_time_s")}}
        test = f", test {test_measured.accuracy:.3f}" if test_measured is not None else ""
        console.print(f"  {runtime}/{mode}: dev {config.task.score_name} {dev_measured.accuracy:.3f}{test}, "
                      f"{dev_measured.median_ms:.2f} ms median, {artifacts[runtime]['size_mb']:.2f} MB", highlight=False)
    metrics = {
        "study": study_name, "trial": trial.number,
        "selected_as": selected_as or ("on the Pareto front" if checks_floor else "asked for by number"),
        "candidate": candidate.to_dict(), "runtime": candidate.runtime, "quantization": candidate.quantization,
        "task": trained.splits.task, "seq_len": seq_len, "label_names": names,
        **trained.splits.metadata(),
        "torch": torch_acc, "artifacts": artifacts, "not_exported": dropped, "vocabulary": vocabulary,
        "finetune": {"steps": options.finetune_steps(config), "lr": config.train_recipe().finetune_lr,
                     "batch_size": options.batch_size,
                     "distilled_from": "the teacher" if trained.data.soft is not None else "the supernet's max subnet",
                     "train_examples": int(len(trained.data.labels)), "dev_accuracy_inherited": dev_before,
                     "dev_accuracy_finetuned": dev_after, "kept": kept},
        "data": {"dataset": config.task.dataset, "n_dev": _scored(dev), "n_test": len(trained.splits.test)},
        "baselines": baselines, "seconds": dict(seconds),
        "search_result": trial.user_attrs[RESULT_ATTR], "target": options.target or config.measure.target,
        "config": json.loads(config.model_dump_json()),
    }
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    (model_dir / "README.md").write_text(model_card(metrics))
    return model_dir


def finetune(trained: TrainedTask, candidate: Candidate, config: SearchConfig, options: ExportOptions,
             dev: dict[str, np.ndarray]) -> tuple[torch.nn.Module, str, float, float]:
    """The candidate's sub-config fine-tuned, or inherited where that scores better on dev: (model, which,
    dev score inherited, dev score fine-tuned)."""
    from edgenas.search.training.train import finetune_subnet

    inherited = trained.supernet.extract(candidate.arch)
    recipe = config.train_recipe()
    tuned = finetune_subnet(trained.supernet, candidate.arch, trained.data, steps=options.finetune_steps(config),
                            batch_size=options.batch_size, lr=recipe.finetune_lr, seed=config.task.split_seed,
                            threads=recipe.threads, device=recipe.device)
    dev_before, dev_after = (torch_scores(net, dev)["accuracy"] for net in (inherited, tuned))
    # a short distillation from a weak max subnet can hurt: keep whichever is better on dev (test stays unseen)
    if dev_after >= dev_before:
        return tuned, "finetuned", dev_before, dev_after
    return inherited, "inherited", dev_before, dev_after


def _scored(arrays: dict[str, np.ndarray]) -> int:
    """Examples (QA: questions) a scored set holds."""
    from edgenas.runtime.tasks import task_of_set

    return task_of_set(arrays).examples(arrays)


def save_trimmed(model: torch.nn.Module, trained: TrainedTask, config: SearchConfig, seq_len: int, model_dir: Path) -> tuple[dict[str, Path], dict]:
    """Save `model` and the tokenizer keeping only the training text's tokens; the data sets
    rewritten by the saved tokenizer itself, so every figure is of the directory as shipped."""
    from transformers import AutoTokenizer

    from edgenas.search.data.vocab import VocabTrim

    vocab = VocabTrim.from_texts(trained.tokenizer, trained.splits.train.documents())
    vocab.trim_model(model)
    model.save_pretrained(model_dir)
    vocab.save_tokenizer(trained.tokenizer, model_dir)
    trimmed = AutoTokenizer.from_pretrained(str(model_dir))
    data = write_data(trained.splits, trimmed, config, seq_len, model_dir / "data")
    return data, {"kept": vocab.size, "of": vocab.full_size}


def export_study(study_name: str, storage: str | None, options: ExportOptions, console: Console) -> list[Path]:
    """Export the chosen trials of a finished study into options.out_dir."""
    from edgenas.runtime.targets import target_from_url
    from edgenas.search.study.runner import load_trained_task, quiet_libraries

    study, config = load_study(study_name, storage)
    if options.trim_vocab and not config.task.record.trims_vocab:
        raise EdgenasError(f"--trim-vocab works for text classifiers only, not for {config.task.record.name} models")
    if options.device:
        config = config.model_copy(update={"device": options.device})
    trials = select_trials(study, options.trials)
    if options.trials.strip() == "pareto" and options.max_models and len(trials) > options.max_models:
        trials = spread_over_front(trials, options.max_models, reference_point(study, config.objectives),
                                   config.objectives)
        console.print(f"[bold]export[/] {len(trials)} trials of the front (--max-models): those that keep the "
                      f"most of its hypervolume", highlight=False)
    quiet_libraries()
    target = target_from_url(options.target or config.measure.target)
    trained = load_trained_task(config, console, options.progress)
    why: dict[int, str] = {}
    if options.trials.strip() == "pareto":
        why = more_accurate_tie(study, trials, trained, config, options, console)
        trials += [t for t in completed(study) if t.number in why]
    finetuned: dict = {}
    dirs = [d for trial in trials
            if (d := export_trial(trial, trained, config, options, target, console, study_name, finetuned,
                                  why.get(trial.number)))]
    if not dirs:
        raise EdgenasError(f"no trial of study '{study_name}' reached budgets.min_accuracy on the export's dev set")
    return dirs


def more_accurate_tie(study: optuna.Study, front: list[FrozenTrial], trained: TrainedTask, config: SearchConfig,
                      options: ExportOptions, console: Console) -> dict[int, str]:
    """{number: why} of the trial off the front that all of the export's dev set finds more accurate than the
    front's most accurate one (inherited weights, torch), or {}: among the ties of objectives.accuracy_ties,
    which the search's few hundred dev rows could not tell apart."""
    ties = accuracy_ties(study, front)
    if not ties:
        return {}
    best = most_accurate(front)
    rows = trained.splits.export_rows(options.questions, config.task.split_seed)
    dev_sets: dict[int, dict[str, np.ndarray]] = {}

    def inherited(trial: FrozenTrial) -> float:
        candidate = Candidate.from_dict(trial.user_attrs["candidate"])
        if candidate.seq_len not in dev_sets:
            dev_sets[candidate.seq_len] = trained.splits.scored_set("dev", trained.tokenizer, candidate.seq_len, rows)
        return torch_scores(trained.supernet.extract(candidate.arch), dev_sets[candidate.seq_len])["accuracy"]

    scores = {t.number: inherited(t) for t in (best, *ties)}
    winner = max(ties, key=lambda t: scores[t.number])
    console.print(f"[bold]ties[/] of the front's most accurate trial {best.number} on the search's dev rows: trials "
                  f"{', '.join(str(t.number) for t in ties)}; inherited {config.task.score_name} on the export's dev "
                  f"set: " + ", ".join(f"{n} {v:.4f}" for n, v in scores.items()), highlight=False)
    if scores[winner.number] <= scores[best.number]:
        return {}
    console.print(f"  trial {winner.number} is exported too, as the most accurate", highlight=False)
    return {winner.number: f"off the Pareto front, a tie of trial {best.number} on the search's dev rows that all of "
                           f"dev finds more accurate (inherited {config.task.score_name} {scores[winner.number]:.4f} "
                           f"against {scores[best.number]:.4f})"}


# ---------------------------------------------------------------- model card


DYNAMIC_INT8_NOTE = ("ONNX Runtime's dynamic int8 computes activation ranges per batch, so in a batch a text's scores "
                     "can move slightly with the other texts in it. Accuracy here is measured one text at a time "
                     "(batch 1), as `edgenas predict --batch-independent` scores.")


def runtime_knobs(runtime: str, candidate: Candidate) -> str:
    """The knobs the runtime has (threads, and its own from the catalog) with the trial's values."""
    backend = get_backend(runtime)
    own = backend.own_knobs(candidate.knobs)
    return f"{runtime} threads {candidate.threads}" + "".join(
        f", {name} {backend.knob(name).spell(value)}" for name, value in own.items())


def model_card(metrics: dict[str, Any]) -> str:
    """A README.md describing architecture, quantization, runtime, accuracy, latency, size and measurement."""
    c = Candidate.from_dict(metrics["candidate"])
    task = get_task(metrics.get("task", "classification"))
    what = task.what.format(labels=", ".join(metrics["label_names"]))
    lines = [
        f"# MobileBERT {c.arch.short()} ({c.runtime}, {c.quantization})", "",
        f"Exported by `edgenas export` from trial {metrics['trial']} of study `{metrics.get('study')}`"
        + (f" ({metrics['selected_as']})" if metrics.get("selected_as") else "")
        + f": {what}, trained on {metrics['data']['dataset']}.", "",
        *_architecture(metrics, c), *_training(metrics, task),
        *(_span_results(metrics) if task.spans else _classifier_results(metrics)), *_not_exported(metrics),
        *_how_measured(metrics, c, task), *_usage(task),
    ]
    return "\n".join(lines)


def _architecture(metrics: dict[str, Any], c: Candidate) -> list[str]:
    rows = [f"| {k} | {v} |" for k, v in c.arch.to_dict().items()]
    return ["## Architecture", "", "| knob | value |", "|---|---|", *rows,
            f"| sequence length | {metrics['seq_len']} |",
            *([f"| window stride (tokens shared by two windows of a long context) | {metrics['stride']} |"]
              if "stride" in metrics else []),
            f"| vocabulary | {metrics['vocabulary']['kept']} of {metrics['vocabulary']['of']} tokens |", ""]


def _training(metrics: dict[str, Any], task: Task) -> list[str]:
    tune = metrics["finetune"]
    metric = task.score_name
    return ["## Training", "",
            f"Weights inherited from the weight-sharing supernet, then fine-tuned for {tune['steps']} steps "
            f"(batch {tune['batch_size']}, peak learning rate {tune['lr']:g}) on labels plus distillation from "
            f"{tune['distilled_from']}. "
            f"Dev {metric} (torch) {tune['dev_accuracy_inherited']:.4f} inherited, "
            f"{tune['dev_accuracy_finetuned']:.4f} fine-tuned; the {tune['kept']} weights were kept.", ""]


def _classifier_results(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "## Results", "",
        f"torch: dev accuracy {metrics['torch']['dev_accuracy']:.4f}, test accuracy {metrics['torch']['test_accuracy']:.4f} "
        f"({metrics['data']['n_dev']} dev / {metrics['data']['n_test']} test examples).", "",
        "| runtime | file | quantization | dev acc | test acc (95 % interval) | median ms | p90 ms | p99 ms | std ms | size MB | argmax agreement with torch (parity set) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    n_test = metrics["data"]["n_test"]
    for runtime, a in metrics["artifacts"].items():
        m = a["measurement"]
        agree = (a.get("parity") or {}).get("argmax_agreement")
        low, high = wilson_interval(m["test_accuracy"], n_test)
        lines.append(f"| {runtime} | {a['file']} | {a['mode']} | {m['dev_accuracy']:.4f} | {m['test_accuracy']:.4f} "
                     f"({low:.3f}-{high:.3f}) | {m['median_ms']:.3f} | {m['p90_ms']:.3f} | {m['p99_ms']:.3f} | "
                     f"{m['std_ms']:.3f} | {a['size_mb']:.2f} | {agree if agree is not None else '-'} |")
    return lines + ["", "Baselines on the same splits: " + ", ".join(
        f"{label} dev {metrics['baselines'][name]['dev']:.4f} / test {metrics['baselines'][name]['test']:.4f}"
        for name, label in BASELINE_NAMES.items()) + "."]


def _span_results(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "## Results", "",
        f"The official SQuAD v1.1 exact match and F1 on {metrics['data']['n_dev']} dev questions (SQuAD's test set "
        f"is not public). torch: F1 {100 * metrics['torch']['dev_accuracy']:.1f}.", "",
        "| runtime | file | quantization | dev EM | dev F1 | windows per question | median ms per window | "
        "ms per question | p90 ms | size MB | start/end token agreement with torch (parity set) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for runtime, a in metrics["artifacts"].items():
        m = a["measurement"]
        agree = (a.get("parity") or {}).get("argmax_agreement")
        lines.append(f"| {runtime} | {a['file']} | {a['mode']} | {100 * m['exact_match']:.1f} | "
                     f"{100 * m['dev_accuracy']:.1f} | {m['windows_per_question']:.3f} | {m['median_ms']:.3f} | "
                     f"{m['ms_per_question']:.3f} | {m['p90_ms']:.3f} | {a['size_mb']:.2f} | "
                     f"{agree if agree is not None else '-'} |")
    baseline = (metrics.get("baselines") or {}).get("sliding_window")
    if baseline:
        lines += ["", f"The sliding-window lexical baseline on the same questions: EM {100 * baseline['exact_match']:.1f}, "
                      f"F1 {100 * baseline['dev']:.1f}."]
    return lines


def _not_exported(metrics: dict[str, Any]) -> list[str]:
    dropped = metrics.get("not_exported") or {}
    return ["", "Not exported, below `budgets.min_accuracy` on dev: " + "; ".join(
        f"{build} ({why})" for build, why in dropped.items()) + "."] if dropped else []


def _how_measured(metrics: dict[str, Any], c: Candidate, task: Task) -> list[str]:
    first = next(iter(metrics["artifacts"].values()))["measurement"]
    knobs = "; ".join(runtime_knobs(runtime, c) for runtime in metrics["artifacts"])
    dynamic = any(get_backend(runtime).mode(a["mode"]).activations == PER_BATCH
                  for runtime, a in metrics["artifacts"].items())
    scored = ("through the runtime on the tokenized windows in `data/dev.npz`: the best span of each question "
              "over its windows (at most 30 tokens), then the official normalisation" if task.spans
              else "through the runtime on the tokenized sets in `data/` (dev, test)")
    return [
        "", "## How it was measured", "",
        f"On `{metrics['target']}` ({first.get('device')}, {first.get('cpu_count')} cores, Python {first.get('python')}): "
        f"batch 1, sequence length {metrics['seq_len']}, {knobs}; {first.get('warmup')} warm-up runs then "
        f"{first.get('runs')} timed runs in a fresh process. Scores are computed {scored}."
        + (f" {DYNAMIC_INT8_NOTE}" if dynamic else ""), "",
    ]


def _usage(task: Task) -> list[str]:
    if task.spans:
        run = "edgenas predict . --question \"Who wrote it?\" --context \"...\"   # through the artifact"
    else:
        run = "edgenas predict . \"some text\"   # through the artifact"
    load = f"from transformers import AutoTokenizer, {task.architecture}"
    model = f"model = {task.architecture}.from_pretrained('.')"
    return ["## Use", "", "```bash", run, "edgenas bench model.* --data data/dev.npz", "```", "", "```python",
            load, model, "tokenizer = AutoTokenizer.from_pretrained('.')", "```", ""]
