"""Training speed on this machine: one teacher step and one sandwich step, fp32 against bf16 autocast.

The teacher (all-MiniLM-L6-v2 as a classifier) and the `minilm` supernet take real
steps on real tweets batches (bucketed by length, batch 32, the word table
frozen), exactly as `edgenas search` trains them: `finetune_teacher`'s and
`sandwich_step`'s own code. fp32 and bf16 alternate in blocks within one process,
so a busy machine slows both alike and the ratio holds. `--profile` adds
torch.profiler's top operators of one step of each; `--compile` times
torch.compile's first steps (compile included) against eager.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Callable

import common


def probe_line(probe: dict[str, Any] | None) -> str:
    if probe is None:
        return ""
    return (f"; the bf16 probe (bf16_probe.py, {probe['at']}): {probe['fp32_s'] * 1e3:.1f} ms fp32 against "
            f"{probe['bf16_s'] * 1e3:.1f} ms bf16, {probe['speedup']:.2f}x")


def _batches(encoded, recipe, count: int) -> list:
    from edgenas.search.training import loop

    order = loop.batch_order(loop.lengths_of(encoded), recipe.batch_size, recipe.seed, 0)
    return order[:count]


def _setup(quick: bool, seq_len: int):
    """The task's training examples, the teacher model and the supernet, on the CPU."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from edgenas.config import SearchConfig
    from edgenas.search.study.runner import load_task_data
    from edgenas.search.training import loop
    from edgenas.search.training.supernet import MobileBertSupernet
    from edgenas.search.training.teacher import quiet_transformers, resolve_checkpoint

    if quick:
        sys.path.insert(0, str(common.HERE.parent / "tests"))
        from tiny_project import make_tiny_project
        import tempfile
        import yaml

        path = make_tiny_project(__import__("pathlib").Path(tempfile.mkdtemp()) / "tiny")
        config = SearchConfig.model_validate(yaml.safe_load(path.read_text()))
    else:
        config = SearchConfig.model_validate({"recipe": "cpu"})
    recipe = config.train_recipe()
    space, splits, tokenizer = load_task_data(config)
    encoded, labels = loop.encode_training(splits, tokenizer, seq_len, 2048, 0)
    net = MobileBertSupernet(space.max_arch(), len(tokenizer), splits.num_labels, family=space.family,
                             layers=space.layers, max_position_embeddings=max(512, seq_len))
    teacher = None
    if space.init:
        net.load_checkpoint(resolve_checkpoint(space.init))
        with quiet_transformers():
            teacher = AutoModelForSequenceClassification.from_pretrained(
                str(resolve_checkpoint(space.init)), num_labels=splits.num_labels, local_files_only=True,
                ignore_mismatched_sizes=True)
    loop.limit_threads(recipe.threads)
    torch.manual_seed(0)
    return config, recipe, space, encoded, labels, net, teacher


def teacher_stepper(model, encoded, labels, recipe) -> Callable[[Any, str], None]:
    """One optimizer step of the teacher fine-tune (finetune_teacher's body) at a precision."""
    import torch

    from edgenas.search.training import loop

    model.train()
    model.get_input_embeddings().weight.requires_grad_(False)
    optimizer, scheduler = loop.make_optimizer([p for p in model.parameters() if p.requires_grad], 1e-5, 0.01, 10**6, 0)
    device = torch.device("cpu")

    def step(index, precision: str) -> None:
        ids, mask, types = loop.tensors(encoded, index, device)
        with loop.autocast(device, precision):
            logits = loop.logits_of(model(input_ids=ids, attention_mask=mask, token_type_ids=types))
        loop.mixed_loss(logits, torch.from_numpy(labels[index]), None, 0.0, 1.0).backward()
        loop.clip_and_step(model, optimizer, scheduler)

    return step


def sandwich_stepper(net, space, encoded, labels, recipe) -> Callable[[Any, str], None]:
    """One sandwich step of the supernet (train.sandwich_step) at a precision, with teacher-shaped soft targets."""
    from dataclasses import replace

    import numpy as np
    import torch

    from edgenas.search.training import loop
    from edgenas.search.training.train import TrainingSet, sandwich_step

    net.train()
    net.mobilebert.embeddings.word_embeddings.weight.requires_grad_(False)
    optimizer, scheduler = loop.make_optimizer([p for p in net.parameters() if p.requires_grad], 1e-5, 0.01, 10**6, 0)
    soft = np.random.default_rng(0).normal(size=(len(labels), net.num_labels)).astype(np.float32)
    data = TrainingSet(encoded, labels, soft)
    device = torch.device("cpu")
    counter = iter(range(10**9))

    def step(index, precision: str) -> None:
        sandwich_step(net, space, data, index, replace(recipe, precision=precision), next(counter), device)
        loop.clip_and_step(net, optimizer, scheduler)

    return step


def interleaved(step: Callable[[Any, str], None], batches: list, blocks: int) -> dict[str, Any]:
    """Seconds per step of fp32 and bf16, alternating blocks over the same batches (first block: warm-up)."""
    per_block = max(1, len(batches) // blocks)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for precision in ("fp32", "bf16"):  # warm-up, not counted
        step(batches[0], precision)
    for b in range(blocks):
        chunk = batches[b * per_block:(b + 1) * per_block]
        for precision in (("fp32", "bf16") if b % 2 == 0 else ("bf16", "fp32")):
            for index in chunk:
                tick = time.perf_counter()
                step(index, precision)
                times[precision].append(time.perf_counter() - tick)
    out = {p: {"median_s": statistics.median(t), "mean_s": statistics.fmean(t), "steps": len(t)} for p, t in times.items()}
    out["speedup"] = out["fp32"]["median_s"] / out["bf16"]["median_s"]
    return out


def profile(step: Callable[[Any, str], None], index, precision: str, rows: int = 12) -> str:
    """torch.profiler's operators of one step, by self CPU time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    step(index, precision)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step(index, precision)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def compiled_cost(model, encoded, labels, recipe, batches: list) -> dict[str, Any]:
    """torch.compile of the teacher: seconds of its first step (compile included) and of later steps vs eager."""
    import torch

    compiled = torch.compile(model, dynamic=True)
    step = teacher_stepper(compiled, encoded, labels, recipe)
    tick = time.perf_counter()
    step(batches[0], "bf16")
    first = time.perf_counter() - tick
    later = []
    for index in batches[1:]:
        tick = time.perf_counter()
        step(index, "bf16")
        later.append(time.perf_counter() - tick)
    return {"first_step_s": first, "median_s": statistics.median(later), "steps": len(later)}


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--steps", type=int, default=24, help="timed steps per precision and model")
    p.add_argument("--seq-len", type=int, default=64, help="longest sequence (batches are cut to their longest text)")
    p.add_argument("--profile", action="store_true", help="torch.profiler's top operators of one step of each")
    p.add_argument("--compile", action="store_true", help="also time torch.compile on the teacher")
    args = p.parse_args(argv)
    run = common.Run("train_speed", args.quick, args.out, argv)
    steps = 4 if args.quick else args.steps
    config, recipe, space, encoded, labels, net, teacher = _setup(args.quick, args.seq_len)
    batches = _batches(encoded, recipe, steps + 1)
    result: dict[str, Any] = {"batch_size": recipe.batch_size, "seq_len": args.seq_len, "steps": steps,
                              "random_subnets_per_step": recipe.random_subnets_per_step}
    import torch

    from edgenas.search.training import bf16_probe, loop

    result["bf16_instructions"] = bf16_probe.has_bf16_instructions()
    result["probe"] = bf16_probe.cpu_probe() if result["bf16_instructions"] else None
    result["auto_uses_bf16"] = loop.native_bf16(torch.device("cpu"))
    stepper = {"sandwich": sandwich_stepper(net, space, encoded, labels, recipe)}
    if teacher is not None:
        stepper["teacher"] = teacher_stepper(teacher, encoded, labels, recipe)
    for name, step in stepper.items():
        result[name] = interleaved(step, batches[1:], 4 if steps >= 8 else 2)
        if args.profile:
            result[f"{name}_profile_bf16"] = profile(step, batches[0], "bf16")
    if args.compile and teacher is not None:
        result["teacher_compiled"] = compiled_cost(teacher, encoded, labels, recipe, batches[:6])
    lines = [f"Batch {recipe.batch_size}, longest sequence {args.seq_len} (batches cut to their longest text), "
             f"{recipe.threads} torch threads, word table frozen; {steps} timed steps of each, fp32 and bf16 in "
             f"alternating blocks in one process. AVX512-BF16/AMX detected: {result['bf16_instructions']}"
             f"{probe_line(result['probe'])}; `precision: auto` trains in "
             f"{'bf16' if result['auto_uses_bf16'] else 'fp32'} here.", "",
             "| step | fp32 s | bf16 s | bf16 speed-up |", "|---|---|---|---|"]
    for name in stepper:
        r = result[name]
        lines.append(f"| {name} | {r['fp32']['median_s']:.3f} | {r['bf16']['median_s']:.3f} | {r['speedup']:.2f}x |")
    if "teacher_compiled" in result:
        c = result["teacher_compiled"]
        lines += ["", f"torch.compile (teacher, bf16, dynamic shapes): first step {c['first_step_s']:.1f} s "
                      f"(compile included), then {c['median_s']:.3f} s per step against eager bf16 "
                      f"{result['teacher']['bf16']['median_s']:.3f} s."]
    for name in stepper:
        if f"{name}_profile_bf16" in result:
            lines += ["", f"Top operators of one bf16 {name} step (torch.profiler, self CPU time):", "",
                      "```", result[f"{name}_profile_bf16"], "```"]
    run.finish(result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
