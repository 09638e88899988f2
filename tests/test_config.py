"""Search config: demo defaults, and one clear line for every bad config."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenas.cli import main
from edgenas.config import ConfigError, SearchConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_demo() -> None:
    config = load_config(None)
    assert config.space == "minilm" and config.task.dataset == "tweets"
    assert config.directions() == ["maximize", "minimize", "minimize"]


def test_device_reaches_the_recipe_unless_the_recipe_names_one(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "device: cpu\n")).train_recipe().device == "cpu"
    assert load_config(write(tmp_path, "device: cpu\nsupernet: {steps: 5, device: mps}\n")).train_recipe().device == "mps"
    assert SearchConfig().train_recipe().device == "auto"


def test_partial_file_overrides_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "candidates:\n  seq_lens: [32]\nbudgets:\n  max_latency_ms: 5\n"))
    assert config.candidates.seq_lens == [32] and config.budgets.max_latency_ms == 5
    assert config.candidates.runtimes == SearchConfig().candidates.runtimes


@pytest.mark.parametrize(
    "text, message",
    [
        ("colour: blue\n", "colour: unknown key"),
        ("measure:\n  runz: 3\n", "measure.runz: unknown key"),
        ("candidates:\n  runtimes:\n    tflite: [static_int8_minmax]\n",
         "unknown tflite mode 'static_int8_minmax'; choose one of fp32, dynamic_int8, fp16, full_int8"),
        ("candidates:\n  runtimes:\n    tvm: [fp32]\n", "unknown runtime 'tvm'; choose one of tflite, onnxruntime, executorch"),
        ("candidates:\n  knobs:\n    spinning: [true]\n", "unknown knob 'spinning'; the runtimes have"),
        ("candidates:\n  xnnpack: [maybe]\n", "xnnpack must be one of true, false, got 'maybe'"),
        ("candidates:\n  runtimes:\n    tflite: []\n", "empty list of quantization modes"),
        ("candidates:\n  seq_lens: []\n", "candidates.seq_lens"),
        ("budgets:\n  min_accuracy: 2\n", "budgets.min_accuracy"),
        ("budgets:\n  min_accuracy: tfidf\n", "budgets.min_accuracy"),
        ("supernet:\n  epochz: 1\n", "unknown training recipe key 'epochz'"),
        ("supernet:\n  steps: 0\n", "steps must be positive"),
        ("supernet:\n  finetune_lr: 0\n", "finetune_lr must be positive"),
        ("recipe: huge\n", "recipe: Input should be 'demo', 'cpu' or 'gpu'"),
        ("device: tpu\n", "device: Input should be 'auto', 'cpu', 'cuda' or 'mps'"),
        ("supernet:\n  steps: many\n", "steps: Input should be a valid integer"),
        ("objectives: [accuracy, accuracy]\n", "distinct objectives"),
        ("- just a list\n", "top level must be a mapping"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_rejects_bad_config_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, "candidates:\n  runtimes:\n    tflite: [int4]\n")
    with pytest.raises(SystemExit) as info:
        main(["search", "--config", str(path), "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "int4" in err
    assert not (tmp_path / "out").exists()


def test_cli_rejects_an_out_of_range_option_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", "--steps", "-3", "--out", str(tmp_path / "models")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--steps" in err
    assert not (tmp_path / "models").exists()


def test_cli_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["search", "--config", str(tmp_path / "nope.yaml")])
    assert info.value.code == 2 and "config file not found" in capsys.readouterr().err


def test_named_recipes_and_their_overrides(tmp_path: Path) -> None:
    from edgenas.recipe import named_recipe

    assert SearchConfig().train_recipe() == load_config(None, recipe="demo").train_recipe()
    cpu = load_config(write(tmp_path, "recipe: cpu\n")).train_recipe()
    assert cpu.steps == named_recipe("classification", "cpu")["steps"] and cpu.eval_every > 0
    tuned = load_config(write(tmp_path, "recipe: cpu\nsupernet: {steps: 7}\n")).train_recipe()
    assert tuned.steps == 7 and tuned.teacher_steps == cpu.teacher_steps  # the config's fields win, the rest stay
    full = load_config(write(tmp_path, "supernet: {steps: 7}\n")).train_recipe()
    assert full.teacher_steps == 4650  # `supernet:` without `recipe:` starts from the gpu (full) recipe
    assert load_config(write(tmp_path, "recipe: demo\n"), recipe="gpu").train_recipe().steps == 2500  # --recipe wins


def test_cli_recipe_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--recipe", "tiny", "--out", str(tmp_path / "out")])
    assert info.value.code == 2 and "recipe" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_task_has_every_named_recipe() -> None:
    """A QA config trains QA's own cpu budget (windows of 256 tokens), not the tweets' one."""
    qa = SearchConfig.model_validate({"task": {"dataset": "squad"}, "recipe": "cpu"}).train_recipe()
    tweets = SearchConfig.model_validate({"recipe": "cpu"}).train_recipe()
    assert (qa.seq_len, qa.teacher_steps, qa.max_train_examples) == (256, 800, 30000)
    assert (tweets.seq_len, tweets.teacher_steps) == (64, 1860)
