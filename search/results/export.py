"""`edgenas export`: Pareto trials -> fine-tuned, recompiled, re-measured model directories.

A model directory holds the transformers weights, config (with the label map)
and tokenizer; model.onnx and/or model.tflite; the tokenized data it was scored
on (data/*.npz, reusable with `edgenas bench --data`); metrics.json; README.md.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial
from rich.console import Console

from edgenas.config import SearchConfig
from edgenas.paths import cache_root
from edgenas.errors import EdgenasError
from edgenas.runtime.predict import ARTIFACT_FILES
from edgenas.search.data.baselines import load_baselines
from edgenas.search.study.objectives import RESULT_ATTR, pareto_trials
from edgenas.search.study.trial import compile_cache_dir, load_npz
from edgenas.search.study.verdict import BASELINE_NAMES
from edgenas.search.uncertainty import wilson_interval
from edgenas.search.results.report import completed, load_study
from edgenas.runtime.backends import PER_BATCH, get_backend
from edgenas.types import Candidate

@dataclass
class ExportOptions:
    """The `edgenas export` flags."""

    out_dir: Path
    trials: str = "pareto"
    steps: int = 300
    batch_size: int = 32
    other_runtime: bool = False
    target: str | None = None  # default: the study's measurement target
    progress: bool = True
    trim_vocab: bool = False  # also when the study's config asks for it
    device: str | None = None  # where the fine-tune runs (default: the study config's)


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


def write_data(splits, tokenizer, config: SearchConfig, seq_len: int, directory: Path) -> dict[str, Path]:
    """Tokenized dev, test, calibration and parity sets at seq_len, as .npz files."""
    from edgenas.search.data.tokenizer import encode

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.task.split_seed)
    calib_rows = np.sort(rng.permutation(len(splits.train))[: config.measure.calibration_examples])
    sets = {
        "dev": {**encode(tokenizer, splits.dev.texts, seq_len), "labels": splits.dev.labels.astype(np.int64)},
        "test": {**encode(tokenizer, splits.test.texts, seq_len), "labels": splits.test.labels.astype(np.int64)},
        "calibration": encode(tokenizer, [splits.train.texts[i] for i in calib_rows], seq_len),
    }
    sets["parity"] = {k: v[: config.measure.parity_examples] for k, v in sets["dev"].items()}
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


def measure_artifact(target, path: Path, data: dict[str, Path], candidate: Candidate, config: SearchConfig) -> dict[str, Any]:
    """Latency and dev accuracy on the target with the trial's knobs; test accuracy through the same runtime."""
    knobs = {"threads": candidate.threads, **candidate.knobs}
    dev = target.measure(path, data["dev"], warmup=config.measure.warmup, runs=config.measure.runs, **knobs)
    test = target.measure(path, data["test"], warmup=0, runs=1, **knobs)
    return {**dev, "dev_accuracy": dev["accuracy"], "test_accuracy": test["accuracy"], "n_test": test.get("n_eval")}


def export_trial(trial: FrozenTrial, trained, config: SearchConfig, options: ExportOptions, target,
                 console: Console, study_name: str = "") -> Path:
    """Fine-tune, save, compile, measure and document one trial; returns its model directory."""
    from edgenas.search.training.loop import accuracy as evaluate_accuracy
    from edgenas.search.training.train import finetune_subnet

    candidate = Candidate.from_dict(trial.user_attrs["candidate"])
    seq_len = candidate.seq_len
    model_dir = options.out_dir / f"trial-{trial.number}-{candidate.runtime}-{candidate.quantization}"
    if model_dir.exists():
        shutil.rmtree(model_dir)  # a rerun replaces the directory rather than mixing two exports
    model_dir.mkdir(parents=True)
    console.print(f"[bold]export[/] trial {trial.number}: {candidate.arch.short()} "
                  f"{candidate.runtime}/{candidate.quantization} seq{seq_len} -> {model_dir}")
    data = write_data(trained.splits, trained.tokenizer, config, seq_len, model_dir / "data")
    dev = load_npz(data["dev"])
    dev_labels = dev.pop("labels")
    inherited = trained.supernet.extract(candidate.arch)
    recipe = config.recipe()
    tuned = finetune_subnet(trained.supernet, candidate.arch, trained.data, steps=options.steps,
                            batch_size=options.batch_size, seed=config.task.split_seed, threads=recipe.threads,
                            device=recipe.device)
    dev_before, dev_after = evaluate_accuracy(inherited, dev, dev_labels), evaluate_accuracy(tuned, dev, dev_labels)
    # a short distillation from a weak max subnet can hurt: keep whichever is better on dev (test stays unseen)
    model, kept = (tuned, "finetuned") if dev_after >= dev_before else (inherited, "inherited")
    names = list(trained.splits.label_names)
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {name: i for i, name in enumerate(names)}
    vocabulary = {"kept": len(trained.tokenizer), "of": len(trained.tokenizer)}
    if options.trim_vocab or config.trim_vocab:
        data, vocabulary = save_trimmed(model, trained, config, seq_len, model_dir)
    else:
        model.save_pretrained(model_dir)
        trained.tokenizer.save_pretrained(model_dir)
    torch_acc = {}
    for split in ("dev", "test"):
        arrays = load_npz(data[split])
        split_labels = arrays.pop("labels")
        torch_acc[f"{split}_accuracy"] = evaluate_accuracy(model, arrays, split_labels)
    builds = [(candidate.runtime, candidate.quantization)]
    if options.other_runtime:
        builds += other_builds(candidate.runtime, candidate.quantization, console)
    artifacts = {}
    for runtime, mode in builds:
        meta = compile_into(model_dir, runtime, mode, seq_len, data, config.measure.compile_timeout_s)
        path = model_dir / ARTIFACT_FILES[runtime]
        measured = measure_artifact(target, path, data, candidate, config)
        artifacts[runtime] = {"file": path.name, "mode": mode, "size_mb": meta["size_bytes"] / 1e6,
                              "sha256": meta.get("sha256"), "parity": meta.get("parity"), "measurement": measured,
                              "compile": {k: meta.get(k) for k in ("converter", "opset", "versions", "compile_time_s")}}
        console.print(f"  {runtime}/{mode}: dev {measured['dev_accuracy']:.3f}, test {measured['test_accuracy']:.3f}, "
                      f"{measured['median_ms']:.2f} ms median, {artifacts[runtime]['size_mb']:.2f} MB", highlight=False)
    metrics = {
        "study": study_name, "trial": trial.number,
        "candidate": candidate.to_dict(), "runtime": candidate.runtime, "quantization": candidate.quantization,
        "seq_len": seq_len, "label_names": names, "torch": torch_acc, "artifacts": artifacts, "vocabulary": vocabulary,
        "finetune": {"steps": options.steps, "batch_size": options.batch_size, "distilled_from": "the teacher" if trained.data.soft is not None else "the supernet's max subnet",
                     "train_examples": int(len(trained.data.labels)), "dev_accuracy_inherited": dev_before,
                     "dev_accuracy_finetuned": dev_after, "kept": kept},
        "data": {"dataset": config.task.dataset, "n_dev": len(trained.splits.dev), "n_test": len(trained.splits.test)},
        "baselines": load_baselines(trained.splits, cache_root() / "baselines").table(trained.splits),
        "search_result": trial.user_attrs[RESULT_ATTR], "target": options.target or config.measure.target,
        "config": json.loads(config.model_dump_json()),
    }
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    (model_dir / "README.md").write_text(model_card(metrics))
    return model_dir


def save_trimmed(model, trained, config: SearchConfig, seq_len: int, model_dir: Path) -> tuple[dict[str, Path], dict]:
    """Save `model` and the tokenizer keeping only the training text's tokens; the data sets
    rewritten by the saved tokenizer itself, so every figure is of the directory as shipped."""
    from transformers import AutoTokenizer

    from edgenas.search.data.vocab import VocabTrim

    vocab = VocabTrim.from_texts(trained.tokenizer, trained.splits.train.texts)
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
    if options.device:
        config = config.model_copy(update={"device": options.device})
    trials = select_trials(study, options.trials)
    quiet_libraries()
    target = target_from_url(options.target or config.measure.target)
    trained = load_trained_task(config, console, options.progress)
    dirs = []
    for trial in trials:
        dirs.append(export_trial(trial, trained, config, options, target, console, study_name))
    return dirs


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
    arch = c.arch.to_dict()
    labels = ", ".join(metrics["label_names"])
    lines = [
        f"# MobileBERT {c.arch.short()} ({c.runtime}, {c.quantization})", "",
        f"Exported by `edgenas export` from trial {metrics['trial']} of study `{metrics.get('study')}`: "
        f"a {metrics['data']['dataset']} text classifier ({labels}).", "",
        "## Architecture", "", "| knob | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in arch.items()], f"| sequence length | {metrics['seq_len']} |",
        f"| vocabulary | {metrics['vocabulary']['kept']} of {metrics['vocabulary']['of']} tokens |", "",
        "## Training", "",
        f"Weights inherited from the weight-sharing supernet, then fine-tuned for {metrics['finetune']['steps']} steps "
        f"(batch {metrics['finetune']['batch_size']}) on labels plus distillation from "
        f"{metrics['finetune']['distilled_from']}. "
        f"Dev accuracy (torch) {metrics['finetune']['dev_accuracy_inherited']:.4f} inherited, "
        f"{metrics['finetune']['dev_accuracy_finetuned']:.4f} fine-tuned; the {metrics['finetune']['kept']} "
        f"weights were kept.", "",
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
    lines += ["", "Baselines on the same splits: " + ", ".join(
        f"{label} dev {metrics['baselines'][name]['dev']:.4f} / test {metrics['baselines'][name]['test']:.4f}"
        for name, label in BASELINE_NAMES.items()) + "."]
    first = next(iter(metrics["artifacts"].values()))["measurement"]
    knobs = "; ".join(runtime_knobs(runtime, c) for runtime in metrics["artifacts"])
    dynamic = any(get_backend(runtime).mode(a["mode"]).activations == PER_BATCH
                  for runtime, a in metrics["artifacts"].items())
    lines += [
        "", "## How it was measured", "",
        f"On `{metrics['target']}` ({first.get('device')}, {first.get('cpu_count')} cores, Python {first.get('python')}): "
        f"batch 1, sequence length {metrics['seq_len']}, {knobs}; {first.get('warmup')} warm-up runs then "
        f"{first.get('runs')} timed runs in a fresh process. Accuracy is computed through the runtime on the "
        "tokenized sets in `data/` (dev, test)." + (f" {DYNAMIC_INT8_NOTE}" if dynamic else ""), "",
        "## Use", "", "```bash", f"edgenas predict {Path('.')} \"some text\"   # through the artifact",
        "edgenas bench model.* --data data/dev.npz", "```", "", "```python",
        "from transformers import AutoTokenizer, MobileBertForSequenceClassification",
        "model = MobileBertForSequenceClassification.from_pretrained('.')",
        "tokenizer = AutoTokenizer.from_pretrained('.')", "```", "",
    ]
    return "\n".join(lines)
