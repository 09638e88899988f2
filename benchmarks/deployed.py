"""The deployed-model pipeline the headline benchmarks measure, built once per work directory.

A search on the task (run_search), its Pareto trials exported with both runtimes
(export_study), the full MobileBERT reference (the `mobilebert` space's max
subnet = MobileBertConfig() defaults, trained by train_supernet with the SAME
TrainRecipe as the search's supernet, compiled to TFLite and ONNX fp32) and the
teacher the search distilled from (load_teacher, from the cache). The record of
what was built (paths, accuracies through the runtimes, caps) is kept in
WORK/pipeline.json; latencies are NOT kept: each benchmark times side by side.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import common
from edgenas.config import SearchConfig
from edgenas.paths import cache_root
from edgenas.types import Candidate

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Setup:
    """What to build: the search config and the budgets around it."""

    config: dict[str, Any]
    n_trials: int
    export_steps: int | None  # None: the recipe's finetune_steps
    reference_space: str  # "mobilebert" (full runs) or a space file (quick runs)
    teacher: str  # "minilm" or a local checkpoint directory
    refine: int = 0  # of the n_trials, the last ones that step from the front (`edgenas search --refine`)
    max_models: int | None = None  # of the front, exported (`edgenas export --max-models`)

    def key(self) -> str:
        """The setup and the recipe it resolves to, so that a changed recipe default rebuilds the pipeline."""
        what = asdict(self) | {"recipe": self.search_config().train_recipe().to_dict()}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]

    def search_config(self) -> SearchConfig:
        return SearchConfig.model_validate(self.config)


def full_setup(steps: int | None = None, n_trials: int = 48, export_steps: int | None = None,
               refine: int = 16, max_models: int = 11) -> Setup:
    """The tweets task, the minilm space, the `cpu` recipe (or `steps` supernet steps), sequence length 64,
    every searched mode and int4 weights, the vocabulary trimmed to the training text's tokens;
    the last `refine` of the n_trials step from the front; the front holds only models that beat the best
    baseline (tuned TF-IDF) on the study's dev rows; of it, the `max_models` that keep the most hypervolume
    are exported, those that beat the baseline on all of dev by more than the difference's 95 % margin."""
    supernet = {} if steps is None else {"steps": steps}
    config = {"task": {"dataset": "tweets"}, "space": "minilm", "recipe": "cpu", "supernet": supernet,
              "candidates": {"seq_lens": [64], "runtimes": size_minded_modes()}, "trim_vocab": True,
              "measure": {"runs": 30, "warmup": 5}, "budgets": {"min_accuracy": "clearly_above_baseline"}}
    return Setup(config, n_trials, export_steps, "mobilebert", "minilm", refine, max_models)


def size_minded_modes() -> dict[str, list[str]]:
    """The searched modes of every installed backend, and ONNX Runtime's int4 weights: with the trimmed
    vocabulary, the smallest files the size target (P2) asks for (RESULTS 2)."""
    from edgenas.config import searched_modes

    modes = searched_modes()
    if "onnxruntime" in modes:
        modes["onnxruntime"] = [*modes["onnxruntime"], "int4_weights"]
    return modes


def offers_int4(config: dict[str, Any]) -> bool:
    """Whether a pipeline config's search may pick ONNX Runtime's int4 weights."""
    return "int4_weights" in config.get("candidates", {}).get("runtimes", {}).get("onnxruntime", [])


def quick_setup(work: Path) -> Setup:
    """tests/tiny_project.py's tiny task and space; a tiny local BERT as the teacher."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_project import make_tiny_project

    path = make_tiny_project(work / "tiny", runtimes={"onnxruntime": ["fp32", "dynamic_int8"]}, seq_lens=[16])
    import yaml

    config = yaml.safe_load(path.read_text())
    config["supernet"]["teacher_steps"] = 4  # the tiny teacher of teacher_accuracy
    return Setup(config, 2, 2, config["space"], str(tiny_teacher(work / "tiny")))


def tiny_teacher(root: Path) -> Path:
    """A randomly initialised 1-layer BERT over the tiny project's vocabulary (fine-tuned by load_teacher)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    out = root / "teacher"
    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        vocab = len((root / "vocab.txt").read_text().split())
        config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=64)
        BertForSequenceClassification(config).save_pretrained(out)
    return out


def default_work(quick: bool, suffix: str = "") -> Path:
    return cache_root() / "bench-deployed" / (("quick" if quick else "full") + suffix)


def add_flags(parser) -> None:
    """The full pipeline's budgets as flags (a non-default setup gets its own default work directory)."""
    parser.add_argument("--steps", type=int, default=None, help="supernet steps (full runs; default: the cpu recipe's)")
    parser.add_argument("--export-steps", type=int, default=None,
                        help="fine-tune steps of each exported model (default: the recipe's finetune_steps)")


def start(name: str, doc: str, argv: list[str] | None, extra=None):
    """Parse a pipeline benchmark's flags (extra adds its own), then build or reuse the pipeline.

    Returns (args, common.Run, pipeline record).
    """
    p = common.parser(doc)
    if extra:
        extra(p)
    add_flags(p)
    args = p.parse_args(argv)
    return args, common.Run(name, args.quick, args.out, argv), build_from_args(args)


def build_from_args(args) -> dict[str, Any]:
    """build() with the flags of add_flags and common.parser."""
    if args.quick:
        return build(args.work, True)
    setup = full_setup(args.steps, export_steps=args.export_steps)
    default = setup.key() == full_setup().key()
    return build(args.work or default_work(False, "" if default else f"-{setup.key()}"), False, setup)


def build(work: Path | None, quick: bool, setup: Setup | None = None) -> dict[str, Any]:
    """The pipeline record for work/pipeline.json, built now unless a finished one for the same setup exists."""
    work = Path(work or default_work(quick))
    work.mkdir(parents=True, exist_ok=True)
    setup = setup or (quick_setup(work) if quick else full_setup())
    record_path = work / "pipeline.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("key") == setup.key():
            return {**record, "reused": True}
    record = _build(work, setup)
    record_path.write_text(json.dumps(record, indent=1, default=str))
    return {**record, "reused": False}


def _build(work: Path, setup: Setup) -> dict[str, Any]:
    from rich.console import Console

    from edgenas.search.results.export import ExportOptions, export_study
    from edgenas.search.study.runner import SearchOptions, load_trained_task, run_search
    from edgenas.search.study.verdict import BASELINES_ATTR

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    console = Console(stderr=True)
    config = setup.search_config()
    seconds: dict[str, float] = {}
    (work / "search").mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(work / 'search' / 'edgenas.db').resolve()}"
    started = time.perf_counter()
    trained = load_trained_task(config, console, progress=True)  # teacher and supernet, resumable, cached
    seconds["training"] = time.perf_counter() - started
    study = run_search(config, SearchOptions(out_dir=work / "search", storage=storage, study_name="deployed",
                                             n_trials=setup.n_trials, refine=setup.refine, sampler="tpe", seed=0,
                                             progress=False), console)
    seconds["search"] = study_seconds(storage, "deployed")
    started = time.perf_counter()
    dirs = export_study("deployed", storage, ExportOptions(work / "models", max_models=setup.max_models,
                                                          steps=setup.export_steps, other_runtime=True, progress=True),
                        console)
    seconds["export"] = time.perf_counter() - started
    started = time.perf_counter()
    reference = build_reference(work / "reference", trained, config, setup.reference_space)
    seconds["reference"] = time.perf_counter() - started
    started = time.perf_counter()
    teacher = teacher_accuracy(trained, config, setup.teacher, reference["seq_len"])
    seconds["teacher_scoring"] = time.perf_counter() - started
    recipe = config.train_recipe()
    return {"key": setup.key(), "setup": asdict(setup), "recipe": recipe.to_dict(),
            "train_examples": min(recipe.max_train_examples or len(trained.splits.train), len(trained.splits.train)),
            "n_train_total": len(trained.splits.train), "n_test": len(trained.splits.test),
            "seq_len": reference["seq_len"], "models": [m for d in dirs for m in exported_models(d)],
            "reference": reference, "teacher": teacher, "baselines": study.user_attrs[BASELINES_ATTR],
            "build_seconds": seconds, "training": training_record(config, trained)}


def study_seconds(storage: str, study_name: str) -> float:
    """A study's wall time from its storage, first trial start to last finish (also right for a resumed study)."""
    import optuna

    trials = [t for t in optuna.load_study(study_name=study_name, storage=storage).trials if t.datetime_complete]
    return (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()


def training_record(config: SearchConfig, trained) -> dict[str, Any]:
    """Where and how long the teacher and the supernet trained, and their learning curves (their cache records)."""
    from edgenas.paths import cache_root as study_cache
    from edgenas.search.training.train import RECORD, supernet_dir

    run = supernet_dir(trained.space, trained.splits, trained.tokenizer, config.train_recipe(), study_cache() / "supernets")
    supernet = json.loads((run / RECORD).read_text())["training"]
    teacher_dir = supernet["start"].get("teacher_dir")
    teacher = json.loads((run.parent / teacher_dir / "teacher.json").read_text()) if teacher_dir else None
    return {"teacher": teacher, "supernet": {k: v for k, v in supernet.items() if k != "start"}}


def exported_models(model_dir: Path) -> list[dict[str, Any]]:
    """One entry per artifact of an `edgenas export` directory (its runtime-measured dev/test accuracy)."""
    metrics = json.loads((model_dir / "metrics.json").read_text())
    candidate = Candidate.from_dict(metrics["candidate"])
    out = []
    for runtime, a in metrics["artifacts"].items():
        m = a["measurement"]
        out.append({"dir": str(model_dir), "trial": metrics["trial"], "arch": metrics["candidate"]["arch"],
                    "runtime": runtime, "mode": a["mode"], "artifact": str(model_dir / a["file"]),
                    "size_bytes": (model_dir / a["file"]).stat().st_size, "dev_accuracy": m["dev_accuracy"],
                    "test_accuracy": m["test_accuracy"], "export_median_ms": m["median_ms"],
                    "knobs": {"threads": candidate.threads, **candidate.knobs}})
    return out


def build_reference(out: Path, trained, config: SearchConfig, space_name: str) -> dict[str, Any]:
    """The space's max config (for `mobilebert`: the 24-layer MobileBertConfig()) with random weights,
    compiled to .tflite and .onnx fp32: the speed and size reference. No pretrained MobileBERT ships in a
    package, and training one from scratch does not reach a bag of words here (ACCURACY-FACTS.md), so
    it has no accuracy: the accuracy reference is the fine-tuned teacher."""
    import torch

    from edgenas.search.results.export import compile_into, write_data
    from edgenas.search.space import load_space
    from edgenas.search.training.supernet import MobileBertSupernet

    space = load_space(space_name)
    arch = space.max_arch()
    torch.manual_seed(0)
    net = MobileBertSupernet(arch, len(trained.tokenizer), trained.splits.num_labels, family=space.family,
                             layers=space.layers)
    model = net.extract(arch)
    names = list(trained.splits.label_names)
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    trained.tokenizer.save_pretrained(out)
    seq_len = config.candidates.seq_lens[0]
    data = write_data(trained.splits, trained.tokenizer, config, seq_len, out / "data")
    (out / "metrics.json").write_text(json.dumps({"seq_len": seq_len, "label_names": names, "reference": True}))
    record = {"dir": str(out), "seq_len": seq_len, "arch": arch.to_dict(), "weights": "random (speed and size only)",
              "params": int(sum(p.numel() for p in model.parameters()))}
    for runtime in ("tflite", "onnxruntime"):
        meta = compile_into(out, runtime, "fp32", seq_len, data, config.measure.compile_timeout_s)
        path = out / ("model.tflite" if runtime == "tflite" else "model.onnx")
        record[runtime] = {"artifact": str(path), "size_bytes": path.stat().st_size, "parity": meta.get("parity")}
    return record


def teacher_accuracy(trained, config: SearchConfig, spec: str, seq_len: int) -> dict[str, Any]:
    """The teacher fine-tuned with the search's recipe (load_teacher, cached); its torch dev/test accuracy."""
    from dataclasses import replace

    from edgenas.paths import cache_root as study_cache
    from edgenas.search.training.loop import accuracy, encode_split
    from edgenas.search.training.teacher import load_teacher

    recipe = replace(config.train_recipe(), teacher=spec)
    model, _ = load_teacher(spec, trained.splits, trained.tokenizer, recipe, study_cache() / "supernets", progress=True)
    record = {"spec": spec if spec == "minilm" else "local tiny BERT", "params": int(sum(p.numel() for p in model.parameters())),
              "teacher_steps": recipe.teacher_steps, "teacher_lr": recipe.teacher_lr}
    for split in ("dev", "test"):
        encoded, labels = encode_split(trained.tokenizer, getattr(trained.splits, split), seq_len)
        record[f"{split}_accuracy"] = accuracy(model, encoded, labels)
    return record


# ---------------------------------------------------------------- choosing and timing


def teacher_label(record: dict[str, Any]) -> str:
    return "MiniLM teacher" if record["teacher"]["spec"] == "minilm" else "teacher (tiny local BERT)"


def best_reference(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The accuracy reference: the fine-tuned teacher (the full MobileBERT has random weights)."""
    return teacher_label(record), record["teacher"]


def pick(models: list[dict[str, Any]], min_dev_accuracy: float, by: str) -> dict[str, Any]:
    """The model smallest in `by` among those with dev accuracy >= min_dev_accuracy; else the most accurate."""
    eligible = [m for m in models if m["dev_accuracy"] >= min_dev_accuracy - 1e-12]
    if eligible:
        return {**min(eligible, key=lambda m: m[by]), "met_accuracy_rule": True}
    return {**max(models, key=lambda m: m["dev_accuracy"]), "met_accuracy_rule": False}


def closing_line(record: dict[str, Any], fits, what: str, allowance_points: float) -> str:
    """For a missed target: the most accurate exported model that meets its speed or size bound, and how far
    its test accuracy is from the allowance below the teacher."""
    fitting = [m for m in record["models"] if fits(m)]
    if not fitting:
        return f"No exported model is {what}: the front needs smaller sub-configs."
    best = max(fitting, key=lambda m: m["test_accuracy"])
    gap = (record["teacher"]["test_accuracy"] - best["test_accuracy"]) * 100 - allowance_points
    return (f"The most accurate exported model {what} is {model_label(best)} at {best['test_accuracy']:.4f} test, "
            f"{gap:.2f} points short of the allowance. " + shallow_trend(record))


def shallow_trend(record: dict[str, Any]) -> str:
    """What the 1-layer learning curve says about closing an accuracy gap of the small sub-configs."""
    curve = record["training"]["supernet"].get("curve", [])
    key = min((k for k in (curve[-1] if curve else {}) if k.startswith("dev@")), default=None, key=lambda k: int(k[4:]))
    if key is None or len(curve) < 2:
        return "What would close it: more accurate small sub-configs."
    change = (curve[-1][key] - curve[-2][key]) * 100
    if change > 0.5:
        return (f"The shallowest depth's inherited dev accuracy still rose {change:.1f} points over the last "
                f"{curve[-1]['step'] - curve[-2]['step']} supernet steps: a longer supernet training would help.")
    return (f"The shallowest depth's inherited dev accuracy changed {change:+.1f} points over the last "
            f"{curve[-1]['step'] - curve[-2]['step']} supernet steps: more sandwich steps alone will not close it. "
            f"Every depth already has its own exit distilled from the teacher's logits, and hidden-state "
            f"distillation from the max subnet showed no gain in a 500-step trial (README, training budgets), "
            f"and a longer distillation of a small model at export (`edgenas export --steps`) lifted it by about "
            f"1.5 points and then stopped (README, export): what is missing is the small sub-configs' capacity.")


def timing_data(model_dir: str) -> Path:
    """Real tokenized tweets (the parity set) to time with: the timed example is its first row."""
    return Path(model_dir) / "data" / "parity.npz"


def measure_latency(artifact: str, data: Path, runs: int, warmup: int, **knobs: Any) -> dict[str, Any]:
    """Batch-1 latency through the runtime in a fresh process (edgenas.runtime's LocalTarget), as its JSON
    record (the figures files keep it beside torch's)."""
    from edgenas.runtime.targets import LocalTarget

    return LocalTarget().measure(Path(artifact), data, runs=runs, warmup=warmup, **knobs).to_json()


def torch_latency_ms(model_dir: str, data: Path, runs: int, warmup: int) -> dict[str, float]:
    """Batch-1 median/p90 latency of the saved transformers model in torch eager mode, one thread."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(1)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with np.load(data) as arrays:
        feeds = {k: torch.from_numpy(arrays[k][:1]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(**feeds)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)), "runs": runs}


def majority_accuracy(record: dict[str, Any]) -> float:
    """Test accuracy of always answering the most frequent test label."""
    with np.load(Path(record["reference"]["dir"]) / "data" / "test.npz") as data:
        labels = data["labels"]
    return float(np.bincount(labels).max() / len(labels))


def majority_note(record: dict[str, Any], accuracies: dict[str, float]) -> str:
    """A warning naming the models no better than the majority class (their accuracy figures say nothing)."""
    floor = majority_accuracy(record)
    trivial = [name for name, acc in accuracies.items() if acc <= floor + 0.005]
    if not trivial:
        return ""
    return (f"Warning: {', '.join(trivial)} score(s) no better than always answering the majority class "
            f"({floor:.4f} on test): under this training cap the accuracy comparison is not meaningful.")


def export_steps(record: dict[str, Any]) -> int:
    """The fine-tune steps each exported model had: the setup's, else the recipe's finetune_steps."""
    steps = record["setup"]["export_steps"]
    return record["recipe"]["finetune_steps"] if steps is None else steps


def caps_line(record: dict[str, Any]) -> str:
    """Where and how long the models trained, and the budgets, for every section that uses the pipeline."""
    r, s, seconds = record["recipe"], record["setup"], record["build_seconds"]
    teacher, supernet = record["training"]["teacher"], record["training"]["supernet"]
    trained = (f"Trained on {supernet['device']}: "
               + (f"teacher {teacher['steps']} steps in {teacher['train_seconds']:.0f} s, " if teacher else "")
               + f"supernet {supernet['steps']} sandwich steps in {supernet['supernet_seconds']:.0f} s")
    finetune_lr = r.get("finetune_lr", 1e-4)  # a record from before the field: the export's fixed 1e-4 of then
    refined = f", the last {s['refine']} stepping from the front" if s.get("refine") else ""
    capped = f" ({s['max_models']} at most, those that keep the most hypervolume)" if s.get("max_models") else ""
    config = s["config"]
    trimmed = ", the vocabulary trimmed to the training text's tokens" if config.get("trim_vocab") else ""
    int4 = ", ONNX Runtime's int4 weights offered" if offers_int4(config) else ""
    phases = (f"search {s['n_trials']} trials (TPE, seed 0{refined}{int4}{trimmed}) in {seconds['search']:.0f} s (first trial start to last "
              f"finish); export of the front{capped} in {seconds['export']:.0f} s (each model fine-tuned {export_steps(record)} "
              f"steps at peak lr {finetune_lr:g} on the labels and the teacher's cached logits, then "
              f"compiled and measured with every backend); reference compile {seconds['reference']:.0f} s")
    budget = (f"Training budget (recipe `{config.get('recipe', 'demo')}`): supernet {r['steps']} steps over "
              f"{record['train_examples']} of {record['n_train_total']} training examples (batch {r['batch_size']}, "
              f"seq {r['seq_len']}, lr {r['lr']:g}), teacher {r['teacher_steps']} steps at lr {r['teacher_lr']:g}.")
    reference = (f"Full MobileBERT = the `{s['reference_space']}` space's max config ({_arch(record['reference']['arch'])}, "
                 f"{record['reference']['params'] / 1e6:.2f} M params) with random weights: no pretrained MobileBERT "
                 f"ships in a package, so it is the speed and size reference only; the accuracy reference is the teacher.")
    built = "an earlier run of the same setup" if record.get("reused") else "this run"
    return f"{trained}; {phases} (pipeline built by {built}). {budget} {reference}"


def _arch(arch: dict[str, int]) -> str:
    return (f"{arch['num_hidden_layers']} layers, hidden {arch['hidden_size']}, bottleneck "
            f"{arch['intra_bottleneck_size']}, {arch['num_attention_heads']} heads, "
            f"{arch['num_feedforward_networks']} FFNs, intermediate {arch['intermediate_size']}, "
            f"embedding {arch['embedding_size']}")


def model_label(m: dict[str, Any]) -> str:
    return f"trial {m['trial']} ({_arch(m['arch'])}) {m['runtime']}/{m['mode']}"
