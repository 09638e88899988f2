"""One trial of the study: the data prepared once per study (encoded eval, parity and
calibration sets), then, per trial: sample a candidate, inherit the supernet's weights, compile,
measure on the target and record the result (or the failure) on the Optuna trial."""

from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from edgenas.config import SearchConfig
from edgenas.errors import EdgenasError
from edgenas.paths import cache_root
from edgenas.search.data.datasets import seeded_rows
from edgenas.search.space import SearchSpace
from edgenas.search.study.candidates import find_duplicate, suggest_candidate
from edgenas.search.study.objectives import FAIL_ATTR, RESULT_ATTR, TrialResult, objective_values, set_constraints
from edgenas.search.study.predictor import VOCAB_ATTR
from edgenas.search.study.verdict import eval_rows
from edgenas.search.uncertainty import wilson_interval
from edgenas.types import Candidate

if TYPE_CHECKING:
    from edgenas.runtime.drift import DriftMonitor
    from edgenas.runtime.targets import Target
    from edgenas.search.data.splits import TaskSplits, Tokenizer
    from edgenas.search.data.vocab import VocabTrim
    from edgenas.search.study.prescreen import Prescreen
    from edgenas.search.training.supernet import MobileBertSupernet
    from edgenas.search.training.train import TrainingSet


# ---------------------------------------------------------------- data prepared once per study


@dataclass
class EncodedSets:
    """The npz files a trial hands to compile/ and runtime/, per sequence length."""

    eval: dict[int, Path] = field(default_factory=dict)
    parity: dict[int, Path] = field(default_factory=dict)
    calibration: dict[int, Path] = field(default_factory=dict)


def write_encoded_sets(splits: TaskSplits, tokenizer: Tokenizer, config: SearchConfig, directory: Path, vocab=None) -> EncodedSets:
    """Tokenize the scored dev subset (eval, parity) and train samples (calibration) for each seq_len
    (in the trimmed vocabulary's ids when `vocab`, a VocabTrim, is given)."""
    directory.mkdir(parents=True, exist_ok=True)
    measure, sets = config.measure, EncodedSets()
    for seq_len in config.candidates.seq_lens:
        built = splits.measurement_sets(tokenizer, seq_len, eval_rows(splits, config), calibration_rows(splits, config),
                                        measure.parity_examples, measure.calibration_examples)
        if vocab is not None:
            built = {name: vocab.remap(arrays) for name, arrays in built.items()}
        sets.eval[seq_len] = _save_npz(directory / f"eval-{seq_len}.npz", built["dev"])
        sets.parity[seq_len] = _save_npz(directory / f"parity-{seq_len}.npz", built["parity"])
        sets.calibration[seq_len] = _save_npz(directory / f"calibration-{seq_len}.npz", built["calibration"])
    return sets


def calibration_rows(splits: TaskSplits, config: SearchConfig, seed_offset: int = 1) -> np.ndarray:
    """The training rows static quantization calibrates on."""
    return seeded_rows(len(splits.train), config.measure.calibration_examples, config.task.split_seed + seed_offset)


def torch_scores(model, arrays: dict[str, np.ndarray], precision: str = "fp32") -> dict[str, Any]:
    """A torch model's scores on a scored set, computed as runtime/ computes an artifact's (score_logits)."""
    from edgenas.runtime.measure import score_logits
    from edgenas.search.training.loop import predict_logits

    return score_logits(predict_logits(model, arrays, precision=precision), arrays)


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
    supernet: MobileBertSupernet
    data: TrainingSet  # per-candidate fine-tunes distil from its teacher logits
    splits: TaskSplits
    tokenizer: Tokenizer
    encoded: EncodedSets
    measurer: Target | DriftMonitor  # .measure(artifact, data, **knobs) -> Measurement
    artifact_store: FileSystemArtifactStore
    compile_cache: Path
    work_dir: Path
    vocab: VocabTrim | None = None  # when config.trim_vocab: candidates keep only its rows
    prescreen: Prescreen | None = None  # when config.prescreen.enabled

    @property
    def vocab_size(self) -> int:
        """The vocabulary every artifact of the study is built with."""
        return self.vocab.size if self.vocab is not None else self.supernet.vocab_size


def run_trial(trial: optuna.Trial, ctx: TrialContext) -> list[float]:
    """Sample, inherit, compile, measure and record one candidate."""
    candidate = suggest_candidate(trial, ctx.space, ctx.config)
    trial.set_user_attr("candidate", candidate.to_dict())
    trial.set_user_attr(VOCAB_ATTR, ctx.vocab_size)
    wait_s = ctx.config.measure.compile_timeout_s + 120  # a twin's compile and measurement
    duplicate = find_duplicate(trial.study, trial.params, trial.number, wait_s=wait_s)
    if duplicate is not None:
        result = TrialResult.from_attrs(duplicate.user_attrs[RESULT_ATTR]).twin(duplicate.number)
        trial.set_user_attr(RESULT_ATTR, result.to_attrs())
        set_constraints(trial, ctx.config, result)
        return objective_values(ctx.config, result)
    clock = PhaseClock()
    try:
        result = _measure_candidate(trial, candidate, ctx, clock)
    except EdgenasError as exc:
        trial.set_user_attr(FAIL_ATTR, str(exc))
        trial.set_user_attr("phases", clock.seconds)
        raise
    except optuna.TrialPruned:
        trial.set_user_attr("phases", clock.seconds)
        raise
    set_constraints(trial, ctx.config, result)
    return objective_values(ctx.config, result)


def inherited_score(ctx: TrialContext, candidate: Candidate) -> float:
    """The sub-config's inherited score on the search's dev rows in torch, as a trial scores it before compiling
    (in bf16 where it pays: an estimate, many of them)."""
    model = ctx.supernet.extract(candidate.arch)
    if ctx.vocab is not None:
        ctx.vocab.trim_model(model)
    return float(torch_scores(model, load_npz(ctx.encoded.eval[candidate.seq_len]), precision="auto")["accuracy"])


def _measure_candidate(trial: optuna.Trial, candidate: Candidate, ctx: TrialContext, clock: PhaseClock) -> TrialResult:
    from edgenas.compile import compile_artifact
    from edgenas.search.training.train import finetune_subnet

    seq_len = candidate.seq_len
    with tempfile.TemporaryDirectory(dir=ctx.work_dir, prefix=f"trial-{trial.number}-") as tmp:
        model_dir = Path(tmp) / "model"
        with clock.phase("extract"):
            if ctx.config.finetune_steps:
                recipe = ctx.config.train_recipe()
                model = finetune_subnet(ctx.supernet, candidate.arch, ctx.data, steps=ctx.config.finetune_steps,
                                        threads=recipe.threads, device=recipe.device)
            else:
                model = ctx.supernet.extract(candidate.arch)
            if ctx.vocab is not None:
                ctx.vocab.trim_model(model)
            model.save_pretrained(model_dir)
        with clock.phase("torch_eval"):
            torch_accuracy = torch_scores(model, load_npz(ctx.encoded.eval[seq_len]))["accuracy"]
        if ctx.prescreen is not None:
            with clock.phase("prescreen"):
                ctx.prescreen.check(trial, candidate, float(torch_accuracy))
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
    result = TrialResult(
        measurement=measurement,
        torch_accuracy=float(torch_accuracy),
        size_mb=artifact.meta["size_bytes"] / 1e6,
        # dev examples (QA: questions) scored: the accuracy's uncertainty follows from it
        accuracy_ci95=wilson_interval(float(measurement.accuracy), int(measurement.n_eval)),
        artifact_meta=artifact.meta,
        artifact_id=artifact_id,
        compile_cached=bool(artifact.meta.get("cached")),
    )
    trial.set_user_attr(RESULT_ATTR, result.to_attrs())
    trial.set_user_attr("phases", clock.seconds)
    return result


# ---------------------------------------------------------------- small helpers


def compile_cache_dir() -> Path:
    """The compiled-artifact cache shared by trials, `edgenas compare` and `edgenas export`."""
    return cache_root() / "artifacts"
