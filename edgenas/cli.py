"""The `edgenas` command line (Typer + rich)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console

from edgenas.errors import EdgenasError

if TYPE_CHECKING:
    from rich.table import Table

    from edgenas.runtime.measurement import Measurement
    from edgenas.runtime.predict import Prediction

app = typer.Typer(
    help="Compiler-aware compression search for transformer LMs on edge devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect the datasets edgenas can train and evaluate on.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        from edgenas import __version__

        typer.echo(f"edgenas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="print the version"),
) -> None:
    """Compiler-aware compression search for transformer LMs on edge devices."""
app.add_typer(data_app, name="data")

#: the options of the commands that read a finished study
StudyName = Annotated[str, typer.Option("--study", help="study name")]
StoredStudyURL = Annotated[Optional[str], typer.Option(
    "--storage", envvar="EDGENAS_STORAGE", show_envvar=True, help="Optuna storage URL (default: the SQLite file in --from)",
)]
SearchDir = Annotated[Path, typer.Option("--from", help="the directory `edgenas search --out` wrote")]

console = Console()
err_console = Console(stderr=True)


@data_app.command("info")
def data_info(
    dataset: str = typer.Argument("tweets", help="tweets, squad, or a path to a CSV/JSONL file (or a SQuAD-format "
                                                  ".json file with --qa)"),
    text_column: str = typer.Option("text", help="text column of a user file"),
    label_column: str = typer.Option("label", help="label column of a user file"),
    text_pair_column: Optional[str] = typer.Option(None, help="sentence pairs: the column of each second text"),
    seed: int = typer.Option(0, help="seed of the train/dev/test split"),
    qa: bool = typer.Option(False, "--qa", help="the file holds extractive-QA data in SQuAD's format"),
) -> None:
    """Print counts per split and label (QA: contexts and questions per split)."""
    if qa or dataset == "squad":
        from edgenas.search.data.qa import describe_qa, load_qa

        console.print(describe_qa(load_qa(dataset, seed=seed), title=dataset))
        return
    from edgenas.search.data.datasets import describe, load_dataset

    splits = load_dataset(dataset, text_column=text_column, label_column=label_column, pair_column=text_pair_column,
                          seed=seed)
    console.print(describe(splits, title=dataset))


DeviceOption = typer.Option(None, "--device", help="where training runs: auto, cpu, cuda or mps (default: the config's)")
RecipeOption = typer.Option(None, "--recipe", help="training budget: demo (minutes), cpu (about an hour on 2 cores) "
                            "or gpu (the full recipe); the config's `supernet:` fields still override it")


def _config(path: Path | None, device: str | None, recipe: str | None = None):
    """The search config of `path` (or the demo), with --device and --recipe applied."""
    from edgenas.config import DEVICES, load_config

    config = load_config(path, recipe=recipe)
    if device is None:
        return config
    if device not in DEVICES:
        raise EdgenasError(f"unknown device '{device}' (choose from {', '.join(DEVICES)})")
    return config.model_copy(update={"device": device})


@app.command()
def train(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML search config (default: the built-in demo)"),
    out: Path = typer.Option(Path("edgenas-supernet"), "--out", help="the portable supernet directory to write"),
    device: Optional[str] = DeviceOption,
    recipe: Optional[str] = RecipeOption,
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
) -> None:
    """Train the teacher and the supernet of a config into a portable directory (for `search --supernet`)."""
    import time

    from edgenas.search.study.runner import train_only

    started = time.perf_counter()
    size = train_only(_config(config, device, recipe), out, console, progress=not no_progress)
    console.print(f"[green]wrote[/] {out} ({size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s; "
                  f"search with: edgenas search --supernet {out}" + (f" --config {config}" if config else ""))


@app.command()
def search(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML search config (default: the built-in demo)"),
    storage: Optional[str] = typer.Option(
        None, "--storage", envvar="EDGENAS_STORAGE", show_envvar=True,
        help="Optuna storage URL, e.g. postgresql://user:pass@host/db (default: SQLite in --out)",
    ),
    study: str = typer.Option("edgenas-demo", "--study", help="study name; rerunning resumes it"),
    n_trials: int = typer.Option(15, "--n-trials", min=1, help="completed trials to reach, across all workers"),
    refine: int = typer.Option(0, "--refine", min=0,
                               help="of the --n-trials, the last N each measure the cheaper neighbour of a front "
                                    "trial that adds the most estimated hypervolume"),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1, help="stop starting trials after S seconds"),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe, nsga2, gp or random"),
    seed: Optional[int] = typer.Option(0, "--seed", help="sampler seed"),
    out: Path = typer.Option(Path("edgenas-out"), "--out", help="directory for the default storage and artifacts"),
    artifacts: Optional[Path] = typer.Option(None, "--artifacts", help="artifact store directory (shared by workers)"),
    workers: int = typer.Option(1, "--workers", min=1, help="local worker processes on one study"),
    supernet: Optional[Path] = typer.Option(None, "--supernet", help="a directory written by `edgenas train`"),
    device: Optional[str] = DeviceOption,
    recipe: Optional[str] = RecipeOption,
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
    worker: bool = typer.Option(False, "--worker", hidden=True, help="started by --workers: no final summary"),
) -> None:
    """Run the compiler-aware architecture search (demo defaults; resumable)."""
    from edgenas.search.study.runner import SearchOptions, run_search
    from edgenas.search.study.storage import SAMPLERS

    search_config = _config(config, device, recipe)
    if sampler not in SAMPLERS:
        raise EdgenasError(f"unknown sampler '{sampler}' (choose from {', '.join(SAMPLERS)})")
    if refine >= n_trials:
        raise EdgenasError(f"--refine {refine}: refinement steps from the front of the first trials, so it must be "
                           f"fewer than --n-trials ({n_trials})")
    options = SearchOptions(
        out_dir=out, storage=storage, study_name=study, n_trials=n_trials, refine=refine, timeout=timeout,
        sampler=sampler, seed=seed, artifacts=artifacts, progress=not no_progress, summary=not worker,
        supernet=supernet,
    )
    if workers > 1:
        from edgenas.search.study.workers import run_workers

        run_workers(search_config, options, workers, config_path=config, console=console)
        return
    run_search(search_config, options, console)


@app.command()
def export(
    study: StudyName = "edgenas-demo",
    storage: StoredStudyURL = None,
    search_dir: SearchDir = Path("edgenas-out"),
    trials: str = typer.Option("pareto", "--trials", help="'pareto' or trial numbers, e.g. 3,7,12"),
    max_models: Optional[int] = typer.Option(None, "--max-models", min=1,
                                             help="with --trials pareto: at most N of the front, those that keep "
                                                  "the most of its hypervolume"),
    out: Path = typer.Option(Path("edgenas-export"), "--out", help="directory for the model directories"),
    steps: Optional[int] = typer.Option(None, "--steps", min=0, help="final fine-tune steps (distilled from the "
                                        "teacher's logits; without a teacher, from the max subnet); default: the "
                                        "study recipe's finetune_steps"),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="fine-tune batch size"),
    other_runtime: bool = typer.Option(False, "--other-runtimes", "--other-runtime",
                                       help="also compile for every other installed runtime, in its nearest mode"),
    target: Optional[str] = typer.Option(None, "--target", help="measure here (default: the study's target)"),
    trim_vocab: bool = typer.Option(False, "--trim-vocab",
                                    help="keep only the tokens the training text uses (others become [UNK])"),
    device: Optional[str] = DeviceOption,
    questions: int = typer.Option(2000, "--questions", min=1,
                                  help="QA: dev questions each model is scored on (a seeded subset of dev)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
) -> None:
    """Export Pareto-optimal models with model cards."""
    from edgenas.search.results.export import ExportOptions, export_study
    from edgenas.search.results.report import storage_url

    options = ExportOptions(out_dir=out, trials=trials, max_models=max_models, steps=steps, batch_size=batch_size,
                            other_runtime=other_runtime, target=target, progress=not no_progress,
                            trim_vocab=trim_vocab, device=device, questions=questions)
    for directory in export_study(study, storage_url(storage, search_dir), options, console):
        console.print(f"[green]wrote[/] {directory}")


@app.command()
def compare(
    model_dir: Path = typer.Argument(..., help="a directory written by `edgenas export`"),
    target: str = typer.Option("local", "--target", help="local or ssh://user@host[:port]"),
    modes: Optional[str] = typer.Option(None, "--modes", help="comma list of modes or runtime/mode, or `all` "
                                        "(default: the modes a search samples)"),
    threads: int = typer.Option(1, "--threads", min=1, help="runtime threads"),
    runs: int = typer.Option(50, "--runs", min=3, help="timed runs per mode"),
    warmup: int = typer.Option(5, "--warmup", min=0, help="untimed warm-up runs"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory (default: MODEL_DIR/compare)"),
    questions: Optional[int] = typer.Option(None, "--questions", min=1, help="QA: score on this many seeded dev "
                                            "questions instead of the export's (10570: all of SQuAD's dev)"),
) -> None:
    """Compare every backend (TFLite, ONNX Runtime, ExecuTorch) for one exported model, in the modes a search
    samples (--modes all: every mode)."""
    from edgenas.search.results.compare import CompareOptions, compare_model, compare_table, write_outputs
    from edgenas.tables import runtime_mode

    options = CompareOptions(target=target, modes=modes.split(",") if modes else None, threads=threads,
                             runs=runs, warmup=warmup, out_dir=out, questions=questions)
    rows = compare_model(model_dir, options, on_row=lambda r: console.print(
        f"{runtime_mode(r['runtime'], r['mode'])}: {r['status']}" + (f" ({r['error']})" if r["status"] != "ok" else ""),
        highlight=False, markup=False), progress=console.is_terminal)
    console.print(compare_table(rows, model_dir.name))
    for path in write_outputs(rows, options.output_dir(model_dir), f"{model_dir.name} on {target}"):
        console.print(f"[green]wrote[/] {path}")


@app.command()
def report(
    study: StudyName = "edgenas-demo",
    storage: StoredStudyURL = None,
    search_dir: SearchDir = Path("edgenas-out"),
    out: Path = typer.Option(Path("edgenas-report"), "--out", help="directory for plots and tables"),
) -> None:
    """Write plots and tables for a study."""
    from edgenas.search.results.report import (dashboard_command, load_study, storage_url, terminal_summary,
                                               write_report)

    storage = storage_url(storage, search_dir)
    loaded, config = load_study(study, storage)
    written = write_report(loaded, config, out)
    console.print(terminal_summary(loaded, config, written), highlight=False)
    console.print(f"[green]wrote[/] {len(written.files)} files to {out}")
    for name, why in written.skipped.items():
        console.print(f"[yellow]skipped[/] {name}: {why}", highlight=False)
    console.print(f"browse the same storage live: {dashboard_command(loaded, storage)}",
                  highlight=False, markup=False, soft_wrap=True)


@app.command()
def predict(
    model_dir: Path = typer.Argument(..., help="a directory written by `edgenas export`"),
    texts: Optional[list[str]] = typer.Argument(None, help="texts to classify"),
    pair: Optional[list[str]] = typer.Option(None, "--pair", help="sentence-pair model: each text's second text, "
                                             "once per text, in order"),
    file: Optional[Path] = typer.Option(None, "--file", help="a text file, one text per line (sentence pairs: "
                                        "text<TAB>second text)"),
    question: Optional[str] = typer.Option(None, "--question", help="QA model: the question to answer"),
    context: Optional[str] = typer.Option(None, "--context", help="QA model: the text holding the answer"),
    context_file: Optional[Path] = typer.Option(None, "--context-file", help="QA model: the context, from a file"),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="a runtime of the model directory: tflite, onnxruntime "
                                          "or executorch (default: the exported one)"),
    threads: int = typer.Option(1, "--threads", min=1, help="runtime threads"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per text on stdout"),
    batch_independent: bool = typer.Option(
        False, "--batch-independent",
        help="score one text at a time, so no text's scores depend on the others (ONNX Runtime dynamic int8 "
             "quantizes per batch); how accuracy is measured"),
) -> None:
    """Classify texts with an exported model, or answer a question from a context with a QA model."""
    import json

    from edgenas.runtime.predict import PredictError, Predictor

    if question is not None or context is not None or context_file is not None:
        if texts or file is not None:
            raise EdgenasError("give texts to classify or --question with --context, not both")
        answer_question(model_dir, question, read_context(context, context_file), runtime, threads, as_json)
        return
    inputs = list(texts or [])
    if file is not None:
        if not file.is_file():
            raise EdgenasError(f"{file}: file not found")
        inputs += [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not inputs:
        raise EdgenasError("give texts to classify or --file F")
    pairs = list(pair) if pair else None
    try:
        predictor = Predictor(model_dir, runtime=runtime, threads=threads)
        if predictor.task.pairs and pairs is None and file is not None:
            inputs, pairs = split_pairs(inputs, file)
        predictions = predictor.predict(inputs, batch_size=1 if batch_independent else 32, pairs=pairs)
    except PredictError as exc:
        raise EdgenasError(str(exc)) from None
    for p in predictions:
        if as_json:
            second = {} if p.pair is None else {"pair": p.pair}
            typer.echo(json.dumps({"text": p.text, **second, "label": p.label, "score": p.score, "scores": p.scores}))
        else:
            typer.echo(prediction_line(p))


def split_pairs(lines: list[str], file: Path) -> tuple[list[str], list[str]]:
    """A sentence-pair file's lines as (texts, second texts): each line is text<TAB>second text."""
    parts = [line.split("\t", 1) for line in lines]
    bad = next((i for i, p in enumerate(parts, start=1) if len(p) != 2 or not p[1].strip()), None)
    if bad is not None:
        raise EdgenasError(f"{file}: line {bad}: a sentence-pair model reads text<TAB>second text")
    return [p[0] for p in parts], [p[1] for p in parts]


def read_context(context: str | None, context_file: Path | None) -> str:
    """The context given inline or as a file (one of the two)."""
    if context is not None and context_file is not None:
        raise EdgenasError("give --context or --context-file, not both")
    if context_file is not None:
        if not context_file.is_file():
            raise EdgenasError(f"{context_file}: file not found")
        try:
            return context_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise EdgenasError(f"{context_file}: not UTF-8 text ({exc.reason})") from None
    if context is None:
        raise EdgenasError("a QA model needs --context TEXT (or --context-file F) beside --question")
    return context


def answer_question(model_dir: Path, question: str | None, context: str, runtime: str | None, threads: int,
                    as_json: bool) -> None:
    """Print the answer span a QA model finds in the context, through its artifact."""
    import json

    from edgenas.runtime.predict import PredictError, Predictor

    if question is None:
        raise EdgenasError("a QA model needs --question TEXT beside the context")
    try:
        answer = Predictor(model_dir, runtime=runtime, threads=threads).answer(question, context)
    except PredictError as exc:
        raise EdgenasError(str(exc)) from None
    if as_json:
        typer.echo(json.dumps({"question": question, "answer": answer.text, "score": answer.score,
                               "start": answer.start, "end": answer.end}))
    else:
        typer.echo(f"{answer.text}\t{answer.score:.3f}\tcharacters {answer.start}-{answer.end} of the context")


def prediction_line(prediction: Prediction) -> str:
    """label<TAB>score<TAB>text (<TAB>second text, for a pair) on one line (line breaks and tabs inside a
    text become spaces)."""
    texts = [prediction.text] + ([] if prediction.pair is None else [prediction.pair])
    return "\t".join([prediction.label, f"{prediction.score:.3f}",
                      *(" ".join(t.replace("\t", " ").splitlines()) for t in texts)])


@app.command()
def bench(
    artifact: Path = typer.Argument(..., help="an artifact: .tflite, .onnx or .pte"),
    target: str = typer.Option("local", help="local or ssh://user@host[:port]"),
    threads: int = typer.Option(1, min=1, help="runtime threads"),
    runs: int = typer.Option(50, min=1, help="timed runs"),
    warmup: int = typer.Option(10, min=0, help="untimed warm-up runs"),
    seq_len: Optional[int] = typer.Option(None, min=2, help="timed sequence length of a dynamic-shape artifact "
                                          "(.onnx; default: the data's, else 128)"),
    data: Optional[Path] = typer.Option(None, help="tokenized .npz (input_ids, attention_mask, token_type_ids, labels); adds accuracy"),
    no_xnnpack: bool = typer.Option(False, "--no-xnnpack", help="TFLite: run without the XNNPACK delegate"),
    graph_optimization: str = typer.Option("all", help="ONNX Runtime: disable, basic, extended or all"),
    key: Optional[str] = typer.Option(None, help="SSH private key (default: agent and ~/.ssh keys)"),
    python: Optional[str] = typer.Option(None, help="Python command on the target (default: python3 over SSH, this one locally)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Time one artifact on a target device."""
    import json

    from edgenas.runtime.targets import target_from_url

    options = {"python": python} if python else {}
    if key and target.startswith("ssh://"):
        options["key_path"] = key
    device = target_from_url(target, **options)
    result = device.measure(artifact, data, threads=threads, runs=runs, warmup=warmup, seq_len=seq_len,
                            xnnpack=not no_xnnpack, graph_optimization=graph_optimization)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
        return
    console.print(bench_table(artifact, result))


def bench_table(artifact: Path, result: Measurement) -> Table:
    """The figures of one `bench` run, then the knobs it ran with; values are never cut."""
    from rich.table import Table

    table = Table(title=f"{artifact.name} on {result.device}", min_width=60)
    table.add_column("figure", overflow="fold")
    table.add_column("value", justify="right", no_wrap=True)
    for name in ("median_ms", "median_ci95", "p90_ms", "p99_ms", "mean_ms", "cv", "peak_rss_mb", "accuracy", "n_eval"):
        value = getattr(result, name)
        if value is not None:
            table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    knobs = {"runtime": result.runtime, "threads": result.threads, **result.knobs, "seq_len": result.seq_len,
             "runs": result.runs, "noisy": result.noisy}
    for name, value in knobs.items():
        if value is not None:
            table.add_row(name, str(value))
    return table


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
    except Exception as exc:  # usage errors (typer's own since 0.29, click's before) carry their exit code
        import click

        if isinstance(exc, (typer.TyperException, click.exceptions.ClickException)):
            err_console.print(f"[bold red]error:[/] {exc.format_message()}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        if isinstance(exc, (typer.Abort, click.exceptions.Abort)):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
