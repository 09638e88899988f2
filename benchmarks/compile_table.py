"""Compile one saved MobileBERT in every runtime x mode and print a markdown table.

    python benchmarks/compile_table.py MODEL_DIR [--seq-len 128] [--n-dev 200] [--n-calib 64]

Calibration rows come from the training split and parity/accuracy rows from the
dev split of a real dataset (default: the tweets corpus), tokenized with the
packaged BERT vocabulary. Each compile runs in its own child process, like a trial.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from edgenas.compile import CompileError, compile_artifact
from edgenas.runtime.backends import BACKENDS


def _tokenized(dataset: str, seq_len: int, n_calib: int, n_dev: int, out: Path) -> tuple[Path, Path]:
    """Write calib.npz (train rows) and dev.npz (dev rows with labels) under out."""
    from edgenas.search.data.datasets import load_dataset
    from edgenas.search.data.tokenizer import encode, load_tokenizer

    splits, tokenizer = load_dataset(dataset), load_tokenizer()
    rng = np.random.default_rng(0)
    calib_rows = rng.choice(len(splits.train), size=min(n_calib, len(splits.train)), replace=False)
    calib = encode(tokenizer, [splits.train.texts[i] for i in calib_rows], seq_len)
    # a random sample: the splits are ordered by label
    dev_rows = rng.choice(len(splits.dev), size=min(n_dev, len(splits.dev)), replace=False)
    dev = encode(tokenizer, [splits.dev.texts[i] for i in dev_rows], seq_len)
    np.savez(out / "calib.npz", **calib)
    np.savez(out / "dev.npz", **dev, labels=splits.dev.labels[dev_rows].astype(np.int64))
    return out / "calib.npz", out / "dev.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--n-dev", type=int, default=200)
    parser.add_argument("--n-calib", type=int, default=64)
    parser.add_argument("--dataset", default="tweets")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temp dir (no cache hits)")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        calib, dev = _tokenized(args.dataset, args.seq_len, args.n_calib, args.n_dev, Path(tmp))
        cache = args.cache_dir or Path(tmp) / "cache"
        rows = [(name, mode, "default") for name, backend in BACKENDS.items() for mode in backend.mode_names]
        rows += [("onnxruntime", "fp32", "tf2onnx"), ("onnxruntime", "dynamic_int8", "tf2onnx")]
        print(f"model {args.model_dir}, seq_len {args.seq_len}, dev n={args.n_dev}, calibration n={args.n_calib}\n")
        print("| runtime | mode | converter | compile s (child wall) | size MB | dev acc (runtime) | dev acc (torch) "
              "| argmax agree | max logit diff |")
        print("|---|---|---|---|---|---|---|---|---|")
        for runtime, mode, converter in rows:
            start = time.perf_counter()
            try:
                art = compile_artifact(args.model_dir, runtime, mode, seq_len=args.seq_len, calibration=calib,
                                       check_data=dev, cache_dir=cache, timeout_s=args.timeout, converter=converter)
            except CompileError as exc:
                print(f"| {runtime} | {mode} | {converter} | failed: {exc} | | | | | |", flush=True)
                continue
            wall, m = time.perf_counter() - start, art.meta
            print(f"| {runtime} | {mode} | {converter} | {m['compile_time_s']:.1f} ({wall:.1f}) "
                  f"| {m['size_bytes'] / 1e6:.2f} | {m['accuracy']:.3f} | {m['torch_accuracy']:.3f} "
                  f"| {m['parity']['argmax_agreement']:.3f} | {m['parity']['max_abs_logit_diff']:.2e} |", flush=True)


if __name__ == "__main__":
    main()
