"""SSHTarget against a real sshd on loopback, started by the test with throwaway keys."""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgenas.runtime.targets import DeviceError, SSHTarget

SSHD = Path("/usr/sbin/sshd")
pytestmark = pytest.mark.skipif(not SSHD.exists(), reason="/usr/sbin/sshd absent (apt-get install openssh-server)")


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> Path:
    """A fresh passphrase-less Ed25519 key pair at path / path.pub."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10) -> None:
    """Block until sshd accepts connections, or fail with its stderr."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {proc.stderr.read() if proc.stderr else ''}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail("sshd did not start listening")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A non-daemon sshd on a free loopback port, its own host key, config and authorized_keys."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen absent (apt-get install openssh-client)")
    root = tmp_path_factory.mktemp("sshd")
    host_key, user_key, stranger_key = keygen(root / "host_key"), keygen(root / "user_key"), keygen(root / "stranger")
    (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
    port, user = free_port(), getpass.getuser()
    (root / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
        f"AllowUsers {user}", "Subsystem sftp internal-sftp", "LogLevel ERROR",
    ]) + "\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation dir sshd insists on when run as root
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(root / "sshd_config")],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port, proc)
        yield {"url": f"ssh://{user}@127.0.0.1:{port}", "key": str(user_key), "stranger": str(stranger_key),
               "known_hosts": root / "known_hosts", "port": port, "user": user}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Device locks (and any known_hosts) go to a fresh cache dir."""
    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def target(sshd: dict) -> SSHTarget:
    """An SSHTarget to the loopback sshd, running this interpreter (login PATH may lack it)."""
    return SSHTarget(sshd["url"], key_path=sshd["key"], python=shlex.quote(sys.executable),
                     known_hosts=sshd["known_hosts"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny ONNX classifier and a labelled dataset it gets fully right."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_runtime import INPUT_KEYS, SEQ, VOCAB, build_onnx, reference_logits, tiny_weights

    out = tmp_path_factory.mktemp("tiny")
    w = tiny_weights()
    ids = np.random.default_rng(3).integers(0, VOCAB, size=(20, SEQ))
    feeds = dict(zip(INPUT_KEYS, (ids, np.ones_like(ids), np.zeros_like(ids))))
    np.savez(out / "data.npz", **feeds, labels=reference_logits(w, feeds).argmax(axis=1))
    return {"onnx": build_onnx(out / "tiny.onnx", w), "data": out / "data.npz"}


def test_ssh_target_measures_on_host(target: SSHTarget, sshd: dict, tiny: dict[str, Path]) -> None:
    result = target.measure(tiny["onnx"], tiny["data"], threads=1, runs=3, warmup=1)
    assert result.accuracy == 1.0 and result.runtime == "onnxruntime"
    assert result.hostname == socket.gethostname() and result.median_ms > 0
    assert f"[127.0.0.1]:{sshd['port']}" in sshd["known_hosts"].read_text()  # first-seen host remembered
    assert target.measure(tiny["onnx"], runs=1, warmup=0).seq_len == 128  # known host key accepted again


def test_ssh_auth_failure(sshd: dict, tiny: dict[str, Path]) -> None:
    target = SSHTarget(sshd["url"], key_path=sshd["stranger"], known_hosts=sshd["known_hosts"])
    with pytest.raises(DeviceError, match=rf"^{sshd['user']}@127\.0\.0\.1:{sshd['port']}: authentication failed"):
        target.measure(tiny["onnx"])


def test_ssh_unreachable_host(sshd: dict, tiny: dict[str, Path]) -> None:
    port = free_port()
    target = SSHTarget(f"ssh://{sshd['user']}@127.0.0.1:{port}", key_path=sshd["key"], connect_timeout=3)
    with pytest.raises(DeviceError, match=rf"127\.0\.0\.1:{port}: host unreachable"):
        target.measure(tiny["onnx"])


def test_ssh_missing_runtime_and_rejected_artifact(sshd: dict, tiny: dict[str, Path], tmp_path: Path) -> None:
    bare = SSHTarget(sshd["url"], key_path=sshd["key"], python=f"{shlex.quote(sys.executable)} -S",
                     known_hosts=sshd["known_hosts"])  # -S: no site-packages, so no numpy on the "device"
    with pytest.raises(DeviceError, match=rf"{bare.name}: runtime library missing on device: .*numpy"):
        bare.measure(tiny["onnx"])
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"junk")
    target = SSHTarget(sshd["url"], key_path=sshd["key"], python=shlex.quote(sys.executable),
                       known_hosts=sshd["known_hosts"])
    with pytest.raises(DeviceError, match=rf"{target.name}: artifact rejected: .*broken\.tflite"):
        target.measure(bad)
    absent = SSHTarget(sshd["url"], key_path=sshd["key"], python="/nonexistent/python3",
                       known_hosts=sshd["known_hosts"])
    with pytest.raises(DeviceError, match="python interpreter '/nonexistent/python3' not found"):
        absent.measure(tiny["onnx"])
