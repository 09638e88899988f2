"""What every training loop here shares: the device, batches bucketed by length,
the optimizer and its schedule, the distillation losses, progress bars."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from torch import nn

from edgenas.errors import EdgenasError
from edgenas.search.data.datasets import seeded_rows

if TYPE_CHECKING:
    from edgenas.search.data.splits import TaskSplits, Tokenizer

Encoded = dict[str, np.ndarray]
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: batches per bucket: texts are sorted by length within each bucket of this many batches
BUCKET_BATCHES = 50


def resolve_device(name: str = "auto") -> torch.device:
    """auto: CUDA, then Apple's MPS, then the CPU; a named device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgenasError("device cuda: this torch has no CUDA device (install a CUDA build of torch, see README)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise EdgenasError("device mps: no Apple MPS device here")
    if name not in ("cpu", "cuda", "mps"):
        raise EdgenasError(f"unknown device {name!r} (auto, cpu, cuda or mps)")
    return torch.device(name)


def device_name(device: torch.device, precision: str | None = None) -> str:
    """A readable name of the device training ran on (the GPU model on CUDA, the CPU model),
    and with `precision` given, whether it trained in bf16 or fp32."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        from edgenas.runtime.measure import cpu_model

        name = f"CPU ({cpu_model()}, {torch.get_num_threads()} threads)"
    else:
        name = device.type
    if precision is None:
        return name
    return f"{name}, {'bf16 autocast' if uses_bf16(device, precision) else 'fp32'}"


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast pays on `device`: a CUDA GPU that supports it, or a CPU with AVX512-BF16
    or AMX where a short timed probe finds bf16 faster than fp32 (bf16_probe.py)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        from edgenas.search.training.bf16_probe import bf16_pays_on_cpu

        return bf16_pays_on_cpu()
    return False


def uses_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether training on `device` runs under bf16 autocast: forced by "bf16"/"fp32", detected by "auto"."""
    if precision == "auto":
        return native_bf16(device)
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise EdgenasError(f"precision bf16: no bf16 autocast on {device.type} (use auto or fp32)")
    return precision == "bf16"


def autocast(device: torch.device, precision: str = "auto") -> ContextManager[Any]:
    """bf16 autocast (fp32 master weights) where `uses_bf16` says so; full precision elsewhere."""
    if uses_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def limit_threads(threads: int = 2) -> None:
    """Run torch on `threads` intra-op threads (at most the machine's cores)."""
    torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))


def encode_split(tokenizer: Tokenizer, split, seq_len: int, limit: int | None = None, seed: int = 0) -> tuple[Encoded, np.ndarray]:
    """Tokenized arrays and labels of a TextSplit (optionally a seeded subsample)."""
    picked = split.rows(seeded_rows(len(split), limit, seed))
    return picked.encode(tokenizer, seq_len), picked.labels.astype(np.int64)


def encode_training(splits: TaskSplits, tokenizer: Tokenizer, seq_len: int, limit: int | None = None, seed: int = 0) -> tuple[Encoded, np.ndarray]:
    """A task's training inputs and labels (a seeded subsample of `limit`): texts and their classes,
    or the windows of QA questions and each window's answer start and end tokens."""
    return splits.training_inputs(tokenizer, seq_len, limit, seed)


def lengths_of(encoded: Encoded) -> np.ndarray:
    """Tokens per example (padding excluded)."""
    return encoded["attention_mask"].sum(1)


def batch_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch: shuffled, then sorted by length within buckets, in shuffled order.

    Batches of similar lengths waste little compute on padding; a pure function of
    seed and epoch, so a resumed run sees the same batches."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    chunk = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def tensors(encoded: Encoded, index: np.ndarray, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """The batch's (input_ids, attention_mask, token_type_ids), cut to its longest text."""
    longest = max(1, int(encoded["attention_mask"][index].sum(1).max()))
    return tuple(torch.from_numpy(encoded[k][index, :longest]).to(device) for k in INPUTS)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton distillation: KL(teacher || student) on softened logits, scaled by T^2."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, -1), F.log_softmax(teacher.float() / t, -1), log_target=True,
                    reduction="batchmean") * t * t


def mixed_loss(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None, weight: float,
               temperature: float) -> torch.Tensor:
    """(1 - weight) * cross-entropy + weight * distillation (plain CE without soft targets).

    A QA model's logits (batch, 2, seq) with labels (batch, 2) are two classifications over
    the tokens, start and end, averaged; soft targets may be longer than the batch (cut)."""
    if logits.ndim == 3:
        logits, labels = logits.flatten(0, 1), labels.flatten()
        soft = None if soft is None else soft[..., : logits.shape[-1]].flatten(0, 1)
    ce = F.cross_entropy(logits.float(), labels)
    if soft is None or weight <= 0:
        return ce
    return (1 - weight) * ce + weight * kd_loss(logits, soft, temperature)


def logits_of(output: Any) -> torch.Tensor:
    """A transformers model output's logits; a QA model's start and end stacked as (batch, 2, seq)."""
    if getattr(output, "logits", None) is not None:
        return output.logits
    return torch.stack([output.start_logits, output.end_logits], dim=1)


#: a QA model's logit at padding tokens in stored logits (the teacher's): never an answer, and the same
#: whichever batch an example was run in
PAD_LOGIT = -1e4


def make_optimizer(params, lr: float, weight_decay: float, total: int, warmup_fraction: float):
    """AdamW with linear warm-up then linear decay to zero over `total` steps."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, int(total * warmup_fraction))

    def factor(step: int) -> float:
        return min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_and_step(model: nn.Module, optimizer, scheduler) -> None:
    """Clip the accumulated gradients to norm 1, step, and clear them."""
    nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


class LoggedProgress(Progress):
    """A rich progress bar that, where no bar can redraw (a log file, a pipe), prints one line a tenth of each task.

    Rich draws nothing to a file until the task ends, so `nohup edgenas train > log` would show no step count or ETA
    for an hour.
    """

    TENTHS = 10

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tenths_logged: dict[TaskID, int] = {}

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._log_line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log_line(task_id)

    def _log_line(self, task_id: TaskID) -> None:
        if self.disable or self.console.is_terminal:
            return
        task = self._tasks[task_id]
        if not task.total:
            return
        tenth = int(self.TENTHS * task.completed / task.total)
        if tenth <= self._tenths_logged.setdefault(task_id, tenth):  # a resumed task starts from where it was
            return
        self._tenths_logged[task_id] = tenth
        info = task.fields.get("info", "")
        left = task.time_remaining
        eta = f", about {format_seconds(left)} left" if left is not None and task.completed < task.total else ""
        self.console.print(f"{task.description} {task.completed:.0f}/{task.total:.0f}{' ' + info if info else ''}: "
                           f"{format_seconds(task.elapsed or 0.0)} elapsed{eta}", highlight=False)


def format_seconds(seconds: float) -> str:
    """1:02:03 for an hour, two minutes and three seconds."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def progress_bar(enabled: bool) -> Progress:
    """A rich progress bar with its ETA (disabled: nothing printed; in a log: a line a tenth)."""
    return LoggedProgress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False,
    )


def save_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, step: int, elapsed: float, **extra: Any) -> None:
    """Everything a run needs to go on exactly where it was: weights, optimizer, schedule, step, RNG."""
    atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "step": step, "elapsed": elapsed, "torch_rng": torch.get_rng_state(), **extra}, path)


def resume(path: Path | None, model: nn.Module, optimizer, scheduler, device: torch.device) -> dict[str, Any]:
    """Restore a checkpoint of save_checkpoint if one exists; its step, seconds trained and extras
    (step 0 without one)."""
    if path is None or not path.is_file():
        return {"step": 0, "elapsed": 0.0}
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state.pop("model"))
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    torch.set_rng_state(state.pop("torch_rng").cpu())
    return {**state, "step": int(state["step"]), "elapsed": float(state["elapsed"])}


def curve_sets(splits: TaskSplits, tokenizer: Tokenizer, recipe) -> dict[str, dict[str, np.ndarray]]:
    """Seeded samples of dev and test (where it has one) for learning curves, as scored sets."""
    from edgenas.runtime.tasks import get_task

    limit = get_task(splits.task).curve_examples
    return {name: splits.scored_set(name, tokenizer, recipe.seq_len,
                                    seeded_rows(len(getattr(splits, name)), limit, recipe.seed + 11))
            for name in ("dev", "test") if len(getattr(splits, name))}


def curve_point(step: int, elapsed: float, scored: dict[str, tuple[nn.Module, Any]],
                sets: dict[str, dict[str, np.ndarray]], device: torch.device, precision: str = "auto") -> dict:
    """One point of a learning curve: the score (accuracy; QA: F1 as a fraction) of each named
    (model, arch) on each held-out set, as runtime/ scores an artifact."""
    from edgenas.runtime.measure import score_logits

    point: dict[str, Any] = {"step": step, "seconds": round(elapsed, 1)}
    for split, arrays in sets.items():
        for name, (model, arch) in scored.items():
            logits = predict_logits(model, arrays, arch=arch, device=device, precision=precision)
            point[f"{split}{name}"] = round(float(score_logits(logits, arrays)["accuracy"]), 4)
    return point


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def predict_logits(model: nn.Module, encoded: Encoded, arch=None, batch_size: int = 128, device: torch.device | None = None,
                   progress: bool = False, label: str = "predict", precision: str = "fp32") -> np.ndarray:
    """Logits of a supernet (at `arch`) or a transformers model, in eval mode, in the examples' order.

    Examples run sorted by length, each batch cut to its longest text; in fp32 unless
    `precision` asks for bf16 (distillation targets, where speed matters more than the last digit)."""
    from edgenas.search.training.supernet import MobileBertSupernet

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = len(encoded["input_ids"])
    order = np.argsort(lengths_of(encoded), kind="stable")
    outputs: list[np.ndarray] = []
    with torch.no_grad(), autocast(device, precision), progress_bar(progress) as bar:
        task = bar.add_task(label, total=n, info="")
        for start in range(0, n, batch_size):
            ids, mask, types = tensors(encoded, order[start : start + batch_size], device)
            if isinstance(model, MobileBertSupernet):
                logits = model(ids, mask, types, arch=arch)
            else:
                logits = logits_of(model(input_ids=ids, attention_mask=mask, token_type_ids=types))
            if logits.ndim == 3:  # QA: every padding token gets PAD_LOGIT, whichever batch it fell in
                logits = F.pad(logits, [0, encoded["input_ids"].shape[1] - logits.shape[-1]])
                padding = torch.from_numpy(encoded["attention_mask"][order[start : start + batch_size]] == 0)
                logits = logits.masked_fill(padding[:, None, :].to(logits.device), PAD_LOGIT)
            outputs.append(logits.float().cpu().numpy())
            bar.update(task, advance=len(ids))
    model.train(was_training)
    if not outputs:
        return np.zeros((0, 0), np.float32)
    logits = np.empty((n, *outputs[0].shape[1:]), np.float32)
    logits[order] = np.concatenate(outputs)
    return logits


def accuracy(model: nn.Module, encoded: Encoded, labels: np.ndarray, arch=None, device: torch.device | None = None) -> float:
    """Accuracy of a supernet sub-config (or a transformers classifier) on encoded examples."""
    if len(labels) == 0:
        raise EdgenasError("cannot measure accuracy on an empty split")
    logits = predict_logits(model, encoded, arch=arch, device=device)
    return float((logits.argmax(-1) == np.asarray(labels)).mean())
