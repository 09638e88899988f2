"""The `edgenas` command line (Typer + rich)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from edgenas.errors import EdgenasError

app = typer.Typer(
    help="Compiler-aware compression search for transformer LMs on edge devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect the datasets edgenas can train and evaluate on.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


def _not_implemented(command: str) -> None:
    raise EdgenasError(f"`edgenas {command}` is not implemented yet")


@data_app.command("info")
def data_info(
    dataset: str = typer.Argument("tweets", help="tweets, squad, or a path to a CSV/JSONL file"),
    text_column: str = typer.Option("text", help="text column of a user file"),
    label_column: str = typer.Option("label", help="label column of a user file"),
    seed: int = typer.Option(0, help="seed of the train/dev/test split"),
) -> None:
    """Print counts per split and label."""
    from edgenas.search.data import describe, load_dataset

    splits = load_dataset(dataset, text_column=text_column, label_column=label_column, seed=seed)
    console.print(describe(splits, title=dataset))


@app.command()
def search() -> None:
    """Run the compiler-aware architecture search."""
    _not_implemented("search")


@app.command()
def export() -> None:
    """Export Pareto-optimal models with model cards."""
    _not_implemented("export")


@app.command()
def compare() -> None:
    """Compare TFLite against ONNX Runtime for one exported model."""
    _not_implemented("compare")


@app.command()
def report() -> None:
    """Write plots and tables for a study."""
    _not_implemented("report")


@app.command()
def predict() -> None:
    """Classify texts with an exported model."""
    _not_implemented("predict")


@app.command()
def bench() -> None:
    """Time one artifact on a target device."""
    _not_implemented("bench")


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except EdgenasError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)
    except typer.Exit as exc:  # --help and friends
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
