"""Fault tolerance and bad input, end to end through `edgenas search` worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgenas.search.study.objectives import FAIL_ATTR, RESULT_ATTR
from edgenas.search.study.storage import StudyError, open_storage, redact
from tiny_project import make_tiny_project

POSTGRES_URL = os.environ.get("EDGENAS_TEST_POSTGRES_URL", "postgresql://edgenas:edgenas@127.0.0.1:55432/edgenas")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny project whose supernet and reference artifact are warmed once for the module."""
    root = tmp_path_factory.mktemp("faults")
    config = make_tiny_project(root / "project", compile_timeout_s=120)
    env = {**os.environ, "EDGENAS_CACHE_DIR": str(root / "cache"), "EDGENAS_HEARTBEAT_S": "1",
           "PYTHONUNBUFFERED": "1"}
    env.pop("EDGENAS_COMPILE_FAULT", None)
    warm = search(config, env, f"sqlite:///{root / 'warm.db'}", "warm", 1)
    assert warm.returncode == 0, warm.stdout
    return {"root": root, "config": config, "env": env}


def search_command(config: Path, study: str, n_trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgenas.cli", "search", "--config", str(config), "--study", study,
            "--n-trials", str(n_trials), "--no-progress", *extra]


def search(config: Path, env: dict, storage: str, study: str, n_trials: int, *extra: str,
           timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(search_command(config, study, n_trials, "--out", str(config.parent / "out"), *extra),
                          env={**env, "EDGENAS_STORAGE": storage}, capture_output=True, text=True, timeout=timeout)


def load(storage: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=storage)


def wait_for_running_trial(storage: str, study: str, limit_s: float = 120) -> None:
    deadline = time.time() + limit_s
    while time.time() < deadline:
        try:
            if load(storage, study).get_trials(states=(TrialState.RUNNING,)):
                return
        except KeyError:  # study not created yet
            pass
        time.sleep(0.5)
    raise AssertionError("no trial started")


def test_killed_worker_trial_is_retried_not_lost(project: dict, tmp_path: Path) -> None:
    # a sequence length nothing else compiles: the worker's first trial really enters the (hanging) converter
    config = make_tiny_project(tmp_path / "p", seq_lens=[14], compile_timeout_s=120)
    storage = f"sqlite:///{project['root'] / 'kill.db'}"
    hanging = {**project["env"], "EDGENAS_COMPILE_FAULT": "hang", "EDGENAS_STORAGE": storage}
    worker = subprocess.Popen(search_command(config, "kill", 3, "--out", str(project["root"] / "o1")),
                              env=hanging, stdout=open(project["root"] / "killed.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_for_running_trial(storage, "kill")
        time.sleep(1.0)  # the worker is now inside the (hanging) compile of its trial
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    killed = load(storage, "kill").get_trials(states=(TrialState.RUNNING,))
    assert len(killed) == 1
    time.sleep(4)  # heartbeat grace period (3 x 1 s) passes
    result = search(config, project["env"], storage, "kill", 3)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = load(storage, "kill").trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    first = trials[killed[0].number]
    assert first.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == first.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == first.params  # the same candidate, measured once
    assert len({t.number for t in complete}) == len(complete)


@pytest.mark.parametrize("fault, reason", [("crash", "SIGSEGV"), ("raise", "injected converter failure")])
def test_converter_fault_fails_the_trial_with_its_reason(project: dict, fault: str, reason: str,
                                                        tmp_path: Path) -> None:
    # a sequence length no other test compiles, so no cached artifact hides the fault
    config = make_tiny_project(tmp_path / "p", seq_lens=[12])
    storage = f"sqlite:///{tmp_path / f'{fault}.db'}"
    env = {**project["env"], "EDGENAS_COMPILE_FAULT": fault}
    result = search(config, env, storage, fault, 1)
    assert result.returncode == 2
    assert "no trial completed" in result.stderr and "Traceback" not in result.stderr
    failed = load(storage, fault).get_trials(states=(TrialState.FAIL,))
    assert failed and all(reason in t.user_attrs[FAIL_ATTR] for t in failed)
    assert reason in result.stdout  # shown on the trial's line


def test_hanging_converter_times_out(project: dict, tmp_path: Path) -> None:
    config = make_tiny_project(tmp_path / "p", seq_lens=[13], compile_timeout_s=2)
    env = {**project["env"], "EDGENAS_COMPILE_FAULT": "hang"}
    storage = f"sqlite:///{tmp_path / 'hang.db'}"
    # reuse the warmed caches: same data, space and recipe as the module's project
    result = search(config, env, storage, "hang", 1)
    assert result.returncode == 2, result.stdout
    failed = load(storage, "hang").get_trials(states=(TrialState.FAIL,))
    assert failed and all("time" in t.user_attrs[FAIL_ATTR] for t in failed)


def late_forwarder(target_port: int, delay_s: float) -> int:
    """A loopback port that starts forwarding to target_port only after delay_s: a storage that comes back."""
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def serve() -> None:
        time.sleep(delay_s)
        server = socket.create_server(("127.0.0.1", port))
        server.settimeout(30)
        try:
            while True:
                client, _ = server.accept()
                upstream = socket.create_connection(("127.0.0.1", target_port))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pipe, args=(a, b), daemon=True).start()
        except OSError:
            server.close()

    threading.Thread(target=serve, daemon=True).start()
    return port


def test_storage_briefly_unreachable_is_retried() -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_or_skip())
    port = late_forwarder(url.port, delay_s=1.5)
    late = url.set(port=port).render_as_string(hide_password=False)
    storage = open_storage(late, attempts=6, first_delay_s=0.3)
    assert optuna.create_study(storage=storage).study_name


def test_storage_down_for_good_is_one_line() -> None:
    with pytest.raises(StudyError, match="cannot open storage") as info:
        open_storage("postgresql://edgenas:secret@127.0.0.1:1/edgenas", attempts=2, first_delay_s=0.1)
    assert "\n" not in str(info.value) and "secret" not in str(info.value)


def test_sqlite_folder_is_created(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'new' / 'study.db'}")
    assert optuna.create_study(storage=storage) and (tmp_path / "new" / "study.db").is_file()


def test_unreachable_ssh_target_is_one_line_before_training(project: dict, tmp_path: Path) -> None:
    config = make_tiny_project(tmp_path / "p", target="ssh://nobody@127.0.0.1:1")
    env = {**project["env"], "EDGENAS_CACHE_DIR": str(tmp_path / "fresh-cache")}
    result = search(config, env, f"sqlite:///{tmp_path / 's.db'}", "ssh", 1, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1" in lines[0], result.stderr
    assert not (tmp_path / "fresh-cache" / "supernets").exists()  # failed before any training


def postgres_or_skip() -> str:
    import sqlalchemy

    try:
        sqlalchemy.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3}).connect().close()
    except Exception:
        pytest.skip(f"no PostgreSQL at {redact(POSTGRES_URL)} (.ci/start-postgres starts one in CI)")
    return POSTGRES_URL


def test_wrong_postgres_password_is_never_echoed(project: dict) -> None:
    url = postgres_or_skip().replace("edgenas:edgenas@", "edgenas:Wr0ngPassw0rd@")
    result = search(project["config"], project["env"], url, "pw", 1, timeout=60)
    assert result.returncode == 2
    assert "Wr0ngPassw0rd" not in result.stdout + result.stderr
    assert "authentication failed" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_many_workers_share_one_postgres_study(project: dict) -> None:
    url = postgres_or_skip()
    study = f"workers-{os.getpid()}-{int(time.time())}"
    result = search(project["config"], project["env"], url, study, 4, "--workers", "2", timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = load(url, study).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 4
    assert "[w0]" in result.stdout and "[w1]" in result.stdout
    measured = [t for t in complete if "duplicate_of" not in t.user_attrs[RESULT_ATTR]]
    assert len({tuple(sorted(t.params.items())) for t in measured}) == len(measured)
