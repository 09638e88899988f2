"""Where a study lives and how it is opened: the storage URL (an SQLite file by default, or a
shared database), opening it with retries and heartbeats, keeping passwords out of messages,
the samplers by name, creating or resuming a study under its config, and the artifact and
scratch directories beside the default storage."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from edgenas.config import SearchConfig
from edgenas.errors import EdgenasError
from edgenas.recipe import NOT_HASHED
from edgenas.search.study.objectives import METRIC_NAMES

SAMPLERS = ("tpe", "nsga2", "gp", "random")
ARTIFACTS_ATTR = "artifact_dir"  # the artifact store's directory, for `edgenas report`'s dashboard command


class StudyError(EdgenasError):
    """A study that cannot be opened or continued as asked."""


def default_storage(out_dir: Path) -> str:
    """The embedded default: one SQLite file in the output directory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(out_dir / 'edgenas.db').resolve()}"


def open_storage(url: str, heartbeat_s: int | None = None, max_retry: int = 2, attempts: int = 5,
                 first_delay_s: float = 0.5, must_exist: bool = False) -> RDBStorage:
    """An RDB storage with heartbeats (a dead worker's trial is failed and retried).

    A storage that is briefly unreachable is retried with exponential back-off;
    a wrong password is not retried. Errors never show the password. Readers
    pass must_exist, so a mistyped SQLite path is reported, not created.
    """
    heartbeat_s = heartbeat_s or int(os.environ.get("EDGENAS_HEARTBEAT_S", "20"))
    database = sqlite_file(url)
    if database is not None:
        if must_exist and not database.is_file():
            raise StudyError(f"no study database at {database}")
        database.parent.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return RDBStorage(
                url,
                heartbeat_interval=heartbeat_s,
                grace_period=heartbeat_s * 3,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                engine_kwargs=_engine_kwargs(url),
            )
        except Exception as exc:  # sqlalchemy raises many types; the user needs one line
            cause = scrub(_first_line(exc), url)
            if attempt == attempts or "authentication failed" in cause or not _transient(exc):
                raise StudyError(f"cannot open storage {redact(url)}: {cause}") from None
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (None for other databases and in-memory SQLite)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return Path(parsed.database).expanduser()
    return None


def _transient(exc: BaseException) -> bool:
    """Connection-level failures worth retrying (not bad URLs or missing drivers)."""
    from sqlalchemy.exc import OperationalError

    return isinstance(exc, OperationalError)


def scrub(text: str, url: str) -> str:
    """Remove the URL's password from any message."""
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:
        return text
    return text.replace(str(password), "***") if password else text


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def redact(url: str) -> str:
    """A storage URL with its password replaced, safe to print or log."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """One of Optuna's samplers by name; constraints come from trial.set_constraint."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True, constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise StudyError(f"unknown sampler '{name}' (choose from {', '.join(SAMPLERS)})")


def open_study(storage: RDBStorage, name: str, config: SearchConfig, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create the study or resume it; refuse to resume one made with another config."""
    config_json = config.model_dump_json()
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, directions=config.directions(), sampler=sampler, load_if_exists=True
        )
    except Exception as exc:
        raise StudyError(f"cannot open study '{name}': {_first_line(exc)}") from None
    stored = study.user_attrs.get("config")
    if stored is None:
        study.set_user_attr("config", config_json)
        study.set_user_attr("objectives", config.objectives)
        study.set_metric_names([METRIC_NAMES[name] for name in config.objectives])
    elif _identity(_current(json.loads(stored))) != _identity(json.loads(config_json)):
        raise StudyError(f"study '{name}' was created with a different config; use another --study name")
    elif stored != config_json:  # only where or how fast training runs, or the export's steps: the latest holds
        study.set_user_attr("config", config_json)
    return study


def _current(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored config as this version writes it: keys added since then take their defaults."""
    try:
        return json.loads(SearchConfig.model_validate(stored).model_dump_json())
    except ValueError:  # not valid any more: compared as stored, so it differs and says so
        return stored


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two configs one study: everything but where and how fast training runs and what the export
    does after the search (the recipe fields outside the supernet's cache key)."""
    supernet = {key: value for key, value in (config.get("supernet") or {}).items() if key not in NOT_HASHED}
    return {**{key: value for key, value in config.items() if key != "device"}, "supernet": supernet}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def study_dirs(out_dir: Path) -> tuple[Path, Path]:
    """The artifact store and scratch directories beside the default storage."""
    artifacts = out_dir / "artifacts"
    work = out_dir / "work"
    artifacts.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    return artifacts, work
