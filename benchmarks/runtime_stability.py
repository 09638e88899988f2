"""How repeatable are edgenas.runtime latencies? CV of repeated fresh-process measurements.

Measures one artifact REPEATS times (each a fresh child process of RUNS timed runs),
on this machine and over SSH to a throwaway sshd on loopback, and prints the
coefficient of variation of the medians; also TFLite with and without XNNPACK.

    python benchmarks/runtime_stability.py            # random-init small MobileBERT, 10 x 50 runs
    python benchmarks/runtime_stability.py --quick    # 3 x 20 runs, smaller model
    python benchmarks/runtime_stability.py --max-runs 50  # a fixed 50 runs: no re-measuring when noisy
    python benchmarks/runtime_stability.py --drift    # also reference-normalised (DriftMonitor) figures
    python benchmarks/runtime_stability.py --artifact model.tflite --ssh ssh://pi@raspberrypi --key ~/.ssh/id_ed25519
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgenas.runtime.backends import BACKENDS
from edgenas.runtime.drift import DriftMonitor
from edgenas.runtime.targets import LocalTarget, SSHTarget, Target


def build_artifacts(work: Path, quick: bool) -> list[Path]:
    """A random-init MobileBERT (CONVERSION-FACTS 'small', or smaller with --quick), fp32, for every installed backend."""
    from transformers import MobileBertConfig, MobileBertForSequenceClassification

    from edgenas.compile.api import compile_artifact

    layers, hidden, bottleneck = (2, 128, 32) if quick else (4, 256, 64)
    config = MobileBertConfig(num_hidden_layers=layers, hidden_size=hidden, true_hidden_size=bottleneck,
                              intra_bottleneck_size=bottleneck, num_attention_heads=2, num_labels=3)
    model_dir = work / "model"
    MobileBertForSequenceClassification(config).save_pretrained(model_dir)
    return [compile_artifact(model_dir, name, "fp32", seq_len=128, cache_dir=work / "artifacts").path
            for name, backend in BACKENDS.items() if backend.missing() is None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def loopback_sshd(work: Path) -> Iterator[tuple[str, str]]:
    """A throwaway non-daemon sshd on 127.0.0.1 with fresh keys; yields (ssh:// url, private key path)."""
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True)
    (work / "authorized_keys").write_text((work / "user_key.pub").read_text())
    port, user = _free_port(), getpass.getuser()
    (work / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host_key'}\nPidFile {work / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {work / 'authorized_keys'}\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nLogLevel ERROR\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)
    # stderr off: the readiness probe makes sshd log a closed connection there
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(work / "sshd_config")], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"ssh://{user}@127.0.0.1:{port}", str(work / "user_key")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def repeated(target: Target, artifact: Path, repeats: int, **knobs: object) -> dict[str, float]:
    """Measure `repeats` times; CV across the medians, and the mean within-measurement CV."""
    results = [target.measure(artifact, **knobs) for _ in range(repeats)]
    medians = np.array([r.median_ms for r in results])
    if results[0].reference_median_ms is not None:
        # Drift-normalised: each median over the reference timed just before it, rescaled to ms.
        medians = medians / np.array([r.reference_median_ms for r in results]) * results[0].reference_baseline_ms
    return {"mean_median_ms": float(medians.mean()), "min_median_ms": float(medians.min()),
            "max_median_ms": float(medians.max()), "cv_between": float(medians.std(ddof=1) / medians.mean()),
            "cv_within": float(np.mean([r.cv for r in results])), "n": repeats,
            "noisy": sum(r.noisy for r in results), "mean_runs": float(np.mean([r.runs for r in results]))}


def _row(label: str, stats: dict[str, float]) -> str:
    return (f"{label:<44} median {stats['mean_median_ms']:8.3f} ms  [{stats['min_median_ms']:.3f}, "
            f"{stats['max_median_ms']:.3f}]  CV between {stats['cv_between'] * 100:5.2f} %  "
            f"within {stats['cv_within'] * 100:5.2f} %  (n={stats['n']}, flagged noisy {stats['noisy']}, "
            f"{stats['mean_runs']:.0f} runs each on average)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, action="append", help="artifact(s) to measure (default: build)")
    parser.add_argument("--quick", action="store_true", help="3 repeats x 20 runs on a smaller model")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--max-runs", type=int, default=None,
                        help="timing goes on up to this while noisy (default 4 x runs; = runs: fixed count)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ssh", default=None, help="ssh://user@host[:port] (default: a loopback sshd)")
    parser.add_argument("--key", default=None, help="SSH private key for --ssh")
    parser.add_argument("--no-ssh", action="store_true")
    parser.add_argument("--drift", action="store_true",
                        help="also: local medians normalised by a reference (the last artifact) timed before each")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 10)
    knobs = {"threads": args.threads, "runs": args.runs or (20 if args.quick else 50), "warmup": 10,
             "max_runs": args.max_runs}
    with tempfile.TemporaryDirectory(prefix="edgenas-stability-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        artifacts = args.artifact or build_artifacts(work, args.quick)
        targets: list[Target] = [LocalTarget()]
        if args.ssh:
            targets.append(SSHTarget(args.ssh, key_path=args.key))
        elif not args.no_ssh and Path("/usr/sbin/sshd").exists():
            (work / "sshd").mkdir()
            url, key = stack.enter_context(loopback_sshd(work / "sshd"))
            targets.append(SSHTarget(url, key_path=key, python=shlex.quote(sys.executable),
                                     known_hosts=work / "known_hosts"))
        print(f"{repeats} fresh-process measurements x {knobs['runs']} timed runs (up to "
              f"{args.max_runs or 4 * knobs['runs']} while noisy), batch 1, {args.threads} thread(s)")
        for artifact in artifacts:
            for target in targets:
                print(_row(f"{artifact.suffix[1:]} on {target.name}", repeated(target, artifact, repeats, **knobs)),
                      flush=True)
            if artifact.suffix == ".tflite":
                print(_row("tflite without XNNPACK on " + targets[0].name,
                           repeated(targets[0], artifact, repeats, xnnpack=False, **knobs)), flush=True)
            if args.drift:
                monitor = DriftMonitor(targets[0], artifacts[-1], every=1, reference_knobs=knobs)
                print(_row(f"{artifact.suffix[1:]} / reference on {targets[0].name}",
                           repeated(monitor, artifact, repeats, **knobs)), flush=True)


if __name__ == "__main__":
    main()
