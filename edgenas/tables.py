"""Rich tables that fit an 80-column terminal, and a pipe, where rich assumes 80 columns.

Rich shrinks a table that is too wide by eliding cells with "…", numbers included.
Here numbers keep their full width and only text columns give way, by folding
onto more lines.
"""

from __future__ import annotations

from rich import box
from rich.table import Table

from edgenas.runtime.backends import BACKENDS

#: runtime names where columns are short (the catalog's short names, e.g. onnx for onnxruntime)
RUNTIME_CODES = {name: backend.short for name, backend in BACKENDS.items()}


def narrow_table(title: str) -> Table:
    """A table without a frame, columns one space apart: the 80 columns go to the cells.

    Put notes under it as lines of their own, not in its caption, which wraps at the table's width.
    """
    return Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0))


def text_column(table: Table, header: str) -> None:
    """A left-aligned text column that folds long text onto more lines rather than eliding it."""
    table.add_column(header, overflow="fold")


def number_column(table: Table, header: str, min_width: int = 5) -> None:
    """A right-aligned number column that never wraps or shrinks, so no number is cut."""
    widest = max(len(line) for line in header.splitlines())
    table.add_column(header, justify="right", no_wrap=True, min_width=max(min_width, widest))


def runtime_mode(runtime: str, mode: str) -> str:
    """onnx/dynamic_int8: a runtime's short code and the full quantization mode."""
    return f"{RUNTIME_CODES.get(runtime, runtime)}/{mode}"
