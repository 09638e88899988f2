"""Where a measurement runs: this machine (a fresh child process) or a host over SSH.

Both targets run the same self-contained bundle (runners.py, backends.py, tasks.py, measurement.py,
measure.py and qa.py copied into a temporary package), so what runs locally is exactly what runs on a device
that has only numpy and the runtime libraries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from edgenas.errors import EdgenasError
from edgenas.paths import cache_root

from .backends import UnknownBackendError
from .measure import MeasureRequest
from .measurement import Measurement

BUNDLE_PACKAGE = "edgenas_device_runtime"
BUNDLE_FILES = ("runners.py", "backends.py", "tasks.py", "measurement.py", "measure.py", "qa.py")
REMOTE_LOCK = "/tmp/edgenas-device.lock"
_KIND_TEXT = {"missing_runtime": "runtime library missing on device", "rejected": "artifact rejected",
              "data": "bad data"}


class DeviceError(EdgenasError):
    """A measurement failed on a device: unreachable, auth, missing runtime, rejected artifact."""


class Target(Protocol):
    """A device that measures artifacts; `name` identifies it in results, locks and errors."""

    name: str

    def measure(self, artifact: Path, data: Path | None = None, **knobs: Any) -> Measurement:
        """Measure one artifact (see edgenas.runtime.measure.measure for knobs and result)."""
        ...


@contextlib.contextmanager
def device_lock(device: str) -> Iterator[None]:
    """Hold an exclusive lock named after the device, so one measurement times it at a time."""
    lock_dir = cache_root() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", device) + ".lock")
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            print(f"waiting for {device}: another measurement (pid {holder}) is timing it", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def bundle_sources() -> dict[str, str]:
    """File name -> text of the self-contained device package."""
    here = Path(__file__).parent
    files = {name: (here / name).read_text() for name in BUNDLE_FILES}
    files["__init__.py"] = '"""edgenas device runtime bundle (copied by edgenas.runtime.targets)."""\n'
    return files


def measure_args(artifact: str, data: str | None, options: dict[str, Any]) -> list[str]:
    """Command-line arguments of `python -m <bundle>.measure` for these options (see MeasureRequest)."""
    try:
        return MeasureRequest.of(**options).to_args(artifact, data)
    except UnknownBackendError as exc:
        raise EdgenasError(str(exc)) from None


def parse_result(device: str, rc: int, stdout: str, stderr: str) -> Measurement:
    """Turn a measurement child's output into its Measurement (target: device), or one DeviceError line."""
    payload = None
    for line in reversed(stdout.strip().splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            payload = json.loads(line)
            break
    if isinstance(payload, dict) and "error" not in payload and rc == 0:
        return Measurement.from_json({**payload, "target": device})
    if isinstance(payload, dict) and "error" in payload:
        cause = _KIND_TEXT.get(payload.get("kind", ""), "measurement failed")
        raise DeviceError(f"{device}: {cause}: {payload['error']}")
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), f"exit code {rc}")
    if "ModuleNotFoundError" in last or "ImportError" in last:
        raise DeviceError(f"{device}: runtime library missing on device: {last}")
    raise DeviceError(f"{device}: measurement failed (exit code {rc}): {last}")


def _checked(path: Path | str | None, what: str) -> Path | None:
    """Resolve a local input file or raise DeviceError naming it."""
    if path is None:
        return None
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise DeviceError(f"{what} {path} does not exist")
    return path


def _thread_env(threads: int) -> dict[str, str]:
    """Pin every thread-pool knob a runtime or BLAS might read to the measured thread count."""
    value = str(threads)
    return {"OMP_NUM_THREADS": value, "OPENBLAS_NUM_THREADS": value, "MKL_NUM_THREADS": value}


class LocalTarget:
    """This machine; each measurement runs in a fresh child process (threads pinned, optional CPU affinity)."""

    def __init__(self, cpu_affinity: list[int] | None = None, python: str = shlex.quote(sys.executable),
                 timeout: float | None = 3600) -> None:
        """python is a command line (e.g. 'python3 -S'), split like a shell would."""
        self.cpu_affinity = cpu_affinity
        self.python = python
        self.timeout = timeout
        self.name = f"local:{socket.gethostname()}"

    def measure(self, artifact: Path, data: Path | None = None, **knobs: Any) -> Measurement:
        """Measure in a child `python -m edgenas_device_runtime.measure`; see measure.measure."""
        artifact_path, data_path = _checked(artifact, "artifact"), _checked(data, "data file")
        if self.cpu_affinity:
            knobs.setdefault("cpus", self.cpu_affinity)
        args = measure_args(str(artifact_path), str(data_path) if data_path else None, knobs)
        with tempfile.TemporaryDirectory(prefix="edgenas-rt-") as tmp, device_lock(self.name):
            package = Path(tmp) / BUNDLE_PACKAGE
            package.mkdir()
            for name, text in bundle_sources().items():
                (package / name).write_text(text)
            env = {**os.environ, **_thread_env(int(knobs.get("threads") or 1)),
                   "PYTHONPATH": os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")]))}
            try:
                proc = subprocess.run([*shlex.split(self.python), "-m", f"{BUNDLE_PACKAGE}.measure", *args], cwd=tmp, env=env,
                                      capture_output=True, text=True, timeout=self.timeout)
            except FileNotFoundError as exc:
                raise DeviceError(f"{self.name}: python interpreter {self.python!r} not found") from exc
            except subprocess.TimeoutExpired as exc:
                raise DeviceError(f"{self.name}: measurement timed out after {self.timeout:.0f} s") from exc
        return parse_result(self.name, proc.returncode, proc.stdout, proc.stderr)


class SSHTarget:
    """A host reached over SSH with the user's key; the bundle and artifact are copied to a temp dir there."""

    def __init__(self, url: str, key_path: str | None = None, python: str = "python3",
                 connect_timeout: float = 10, known_hosts: str | Path | None = None,
                 timeout: float | None = 3600) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise DeviceError(f"bad SSH target {url!r}; expected ssh://user@host[:port]")
        self.host, self.port, self.user = parts.hostname, parts.port or 22, parts.username
        self.key_path = key_path
        self._apply_ssh_config()
        self.user = self.user or os.environ.get("USER") or "root"
        self.python = python
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        # Hosts first seen are remembered here, never written into the user's ~/.ssh/known_hosts.
        self.known_hosts = Path(known_hosts) if known_hosts else cache_root() / "known_hosts"
        self.name = f"{self.user}@{self.host}" + (f":{self.port}" if self.port != 22 else "")

    def _apply_ssh_config(self) -> None:
        """Honour HostName/User/Port/IdentityFile from ~/.ssh/config, as the ssh client would."""
        config_path = Path.home() / ".ssh" / "config"
        if not config_path.is_file():
            return
        import paramiko

        entry = paramiko.SSHConfig.from_path(str(config_path)).lookup(self.host)
        self.host = entry.get("hostname", self.host)
        self.user = self.user or entry.get("user")
        if self.port == 22 and "port" in entry:
            self.port = int(entry["port"])
        if self.key_path is None and entry.get("identityfile"):
            self.key_path = entry["identityfile"][0]

    def _connect(self) -> Any:
        """An open paramiko client, or DeviceError naming the cause (unreachable, auth, host key)."""
        import paramiko

        client = paramiko.SSHClient()
        with contextlib.suppress(OSError):
            client.load_system_host_keys()
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        self.known_hosts.touch(exist_ok=True)
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # like StrictHostKeyChecking=accept-new
        key = str(Path(self.key_path).expanduser()) if self.key_path else None
        try:
            client.connect(self.host, port=self.port, username=self.user, key_filename=key,
                           look_for_keys=key is None, allow_agent=key is None, timeout=self.connect_timeout,
                           banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout)
        except paramiko.BadHostKeyException as exc:
            raise DeviceError(f"{self.name}: host key changed ({exc}); check the host and {self.known_hosts}") from exc
        except paramiko.AuthenticationException as exc:
            raise DeviceError(f"{self.name}: authentication failed ({exc}) with key {key or 'from agent/~/.ssh'}") from exc
        except (OSError, paramiko.SSHException) as exc:
            raise DeviceError(f"{self.name}: host unreachable: {exc or type(exc).__name__}") from exc
        return client

    def _exec(self, client: Any, command: str) -> tuple[int, str, str]:
        """Run a shell command on the host; return (exit code, stdout, stderr)."""
        _, stdout, stderr = client.exec_command(command, timeout=self.timeout)
        out, err = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), out, err

    def measure(self, artifact: Path, data: Path | None = None, **knobs: Any) -> Measurement:
        """Copy bundle + artifact (+ data), measure on the host under a host-wide flock, read JSON back."""
        artifact_path, data_path = _checked(artifact, "artifact"), _checked(data, "data file")
        with device_lock(self.name):
            client = self._connect()
            try:
                return self._measure_remote(client, artifact_path, data_path, knobs)
            except (OSError, socket.timeout) as exc:
                raise DeviceError(f"{self.name}: connection lost: {exc or type(exc).__name__}") from exc
            finally:
                client.close()

    def _measure_remote(self, client: Any, artifact: Path, data: Path | None, knobs: dict[str, Any]) -> Measurement:
        rc, out, err = self._exec(client, "mktemp -d")
        if rc != 0:
            raise DeviceError(f"{self.name}: cannot create a temp dir: {err.strip() or out.strip()}")
        tmp = out.strip()
        try:
            sftp = client.open_sftp()
            sftp.mkdir(f"{tmp}/{BUNDLE_PACKAGE}")
            for name, text in bundle_sources().items():
                with sftp.open(f"{tmp}/{BUNDLE_PACKAGE}/{name}", "w") as handle:
                    handle.write(text)
            sftp.put(str(artifact), f"{tmp}/{artifact.name}")
            if data is not None:
                sftp.put(str(data), f"{tmp}/data.npz")
            sftp.close()
            args = measure_args(artifact.name, "data.npz" if data else None, knobs)
            env = {**_thread_env(int(knobs.get("threads") or 1)), "PYTHONPATH": tmp}
            run = " ".join(shlex.quote(a) for a in [*shlex.split(self.python), "-m", f"{BUNDLE_PACKAGE}.measure", *args])
            # flock(1) serialises measurements from every machine on this host; skip it where absent.
            command = (f"cd {shlex.quote(tmp)} && export {' '.join(f'{k}={shlex.quote(v)}' for k, v in env.items())}"
                       f" && if command -v flock >/dev/null 2>&1; then flock {REMOTE_LOCK} {run}; else {run}; fi")
            rc, out, err = self._exec(client, command)
        finally:
            self._exec(client, f"rm -rf {shlex.quote(tmp)}")
        if rc == 127 or "failed to execute" in err:  # from the shell, or from flock(1)
            raise DeviceError(f"{self.name}: python interpreter {self.python!r} not found on device")
        return parse_result(self.name, rc, out, err)


def target_from_url(url: str, **kwargs: Any) -> Target:
    """'local' -> LocalTarget, 'ssh://user@host[:port]' -> SSHTarget; kwargs go to the constructor."""
    if url in ("local", "localhost"):
        return LocalTarget(**kwargs)
    if url.startswith("ssh://"):
        return SSHTarget(url, **kwargs)
    raise DeviceError(f"unknown target {url!r}; use 'local' or ssh://user@host[:port]")
