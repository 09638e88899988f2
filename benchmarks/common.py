"""Shared benchmark plumbing: flags, the machine description, JSON + markdown output, RESULTS.md sections."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
PACKAGES = ("edgenas", "torch", "transformers", "optuna", "numpy", "onnx", "onnxruntime", "tensorflow-cpu",
            "ai-edge-litert", "tf2onnx")


def parser(doc: str) -> argparse.ArgumentParser:
    """The flags every benchmark has: --quick, --out, --work, --write-results."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(doc.splitlines()[1:]))
    p.add_argument("--quick", action="store_true", help="tiny data and budgets: the CI smoke test (about a minute)")
    p.add_argument("--out", type=Path, default=Path("benchmark-results"), help="where NAME.json and NAME.md go")
    p.add_argument("--work", type=Path, default=None,
                   help="shared work directory of the deployed-model pipeline (default: under the edgenas cache)")
    p.add_argument("--write-results", action="store_true", help=f"replace this script's section of {RESULTS.name}")
    return p


def work_dir(given: Path | None, name: str) -> Path:
    """--work, or this benchmark's folder under the edgenas cache; created."""
    from edgenas.paths import cache_root

    work = given or cache_root() / "benchmarks" / name
    work.mkdir(parents=True, exist_ok=True)
    return work


def machine() -> dict[str, Any]:
    """CPU model, cores, load, Python and package versions of this machine."""
    from edgenas.runtime.measure import cpu_model

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "os": platform.platform(), "packages": versions}


def machine_line(info: dict[str, Any]) -> str:
    """One markdown line describing the machine."""
    pkgs = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    load = "/".join(str(x) for x in info["load_average_1_5_15"])
    end = "/".join(str(x) for x in info.get("load_average_at_end", []))
    return (f"Machine: {info['cpu']}, {info['cores']} cores ({info['machine']}), load average {load} at the start"
            f"{' and ' + end + ' at the end' if end else ''} (1/5/15 min; other jobs share the CPU), "
            f"Python {info['python']}; {pkgs}.")


@dataclass
class Run:
    """One benchmark run: its name, command, start time and machine; finish() writes the outputs."""

    name: str
    quick: bool
    out: Path
    argv: list[str] | None = None  # the script's arguments (None: this process's command line)
    started: float = field(default_factory=time.perf_counter)
    info: dict[str, Any] = field(default_factory=machine)
    script: str = ""  # the script's name when the section's differs (default: name)

    @property
    def command(self) -> str:
        args = sys.argv[1:] if self.argv is None else self.argv
        return " ".join(["python", f"benchmarks/{self.script or self.name}.py", *args])

    def finish(self, figures: dict[str, Any], body: str, write_results: bool = False) -> dict[str, Any]:
        """Print and write NAME.json / NAME.md (and the RESULTS.md section); returns the record."""
        seconds = time.perf_counter() - self.started
        self.info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        record = {"benchmark": self.name, "quick": self.quick, "command": self.command,
                  "duration_s": round(seconds, 1), "machine": self.info, **figures}
        text = section_markdown(record, body)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"{self.name}.json").write_text(json.dumps(record, indent=1, default=str))
        (self.out / f"{self.name}.md").write_text(text + "\n")
        print(text, flush=True)
        if write_results:
            replace_section(RESULTS, self.name, text)
        return record


def section_markdown(record: dict[str, Any], body: str) -> str:
    """The body with the command, duration, mode and machine above it."""
    mode = "quick smoke run (tiny data: not a real figure)" if record["quick"] else "full run"
    return "\n".join([
        f"Command: `{record['command']}` ({mode}; took {record['duration_s']:.0f} s).", "",
        machine_line(record["machine"]), "", body.rstrip(),
    ])


def replace_section(path: Path, name: str, text: str) -> None:
    """Put text between this benchmark's markers in path (appended if the markers are absent)."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    current = path.read_text() if path.is_file() else "# Benchmark results\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    updated = pattern.sub(lambda _: block, current) if pattern.search(current) else current.rstrip() + f"\n\n{block}\n"
    path.write_text(updated)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A markdown table of rows (floats to 4 significant figures)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def feasible(trial) -> bool:
    """An Optuna trial within every budget (a front and its hypervolume count only these)."""
    return all(value <= 0 for value in (trial.constraints or {}).values())
