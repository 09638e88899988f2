"""Whether bf16 autocast pays on this CPU: timed once per machine, not guessed from its flags.

AVX512-BF16 alone does not make bf16 faster. On an AMD Zen 4 a training step ran 1.74x faster
under bf16 autocast; on an Intel Xeon VM that has AVX512-BF16 but no AMX exposed, 1.4-1.6x
slower (benchmarks/train_speed.py, 2026-12-07). So where the instructions exist, a short
matmul probe at a transformer layer's shapes, forward and backward, fp32 and bf16 in
alternating blocks, decides; its verdict is kept in the cache for this CPU, torch and thread count.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from typing import Any

import torch

#: bf16 must beat fp32 by this factor: a tie is not worth bf16's rounding
MIN_SPEEDUP = 1.1
PROBE_FILE = "bf16-probe.json"


def has_bf16_instructions() -> bool:
    """AVX512-BF16 or AMX: without them a CPU emulates bf16, slower than fp32 (pytorch#86550)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def machine_key() -> str:
    from edgenas.runtime.measure import cpu_model

    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


@functools.cache
def bf16_pays_on_cpu() -> bool:
    """Whether bf16 autocast trains faster than fp32 here (instructions present and the probe's verdict)."""
    return has_bf16_instructions() and cpu_probe()["speedup"] >= MIN_SPEEDUP


def cpu_probe() -> dict[str, Any]:
    """The stored probe of this machine, or a new one (about 2 s), stored."""
    from edgenas.paths import cache_root

    path = cache_root() / PROBE_FILE
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = {}
    stored = stored if isinstance(stored, dict) else {}
    key = machine_key()
    if not isinstance(stored.get(key), dict):
        stored[key] = time_fp32_against_bf16()
        try:
            path.write_text(json.dumps(stored, indent=1))
        except OSError:
            pass  # a read-only cache: probe again next time
    return stored[key]


def time_fp32_against_bf16(blocks: int = 5, steps: int = 3) -> dict[str, Any]:
    """Median seconds of one forward and backward of a feed-forward block (384 -> 1536 -> 384, 1,536 tokens)."""
    # the first caller may be an evaluation, or a training whose random stream must not move
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        return _time_fp32_against_bf16(blocks, steps)


def _time_fp32_against_bf16(blocks: int, steps: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(32 * 48, 384, generator=generator)
    block = torch.nn.Sequential(torch.nn.Linear(384, 1536), torch.nn.GELU(), torch.nn.Linear(1536, 384))

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = block(tokens)
        out.float().sum().backward()

    seconds: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in (False, True):
        step(bf16)  # warm-up: oneDNN picks its kernels
    for _ in range(blocks):
        for bf16 in (False, True):
            started = time.perf_counter()
            for _ in range(steps):
                step(bf16)
            seconds[bf16].append((time.perf_counter() - started) / steps)
    fp32, bf16 = statistics.median(seconds[False]), statistics.median(seconds[True])
    return {"fp32_s": fp32, "bf16_s": bf16, "speedup": fp32 / bf16, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
