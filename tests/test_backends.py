"""The backend catalog: one declaration per runtime, read by config, compile, export, compare and measure."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenas.compile.converters import converter, versioned_tools
from edgenas.config import CandidateConfig, ConfigError, SearchConfig
from edgenas.errors import EdgenasError
from edgenas.runtime.backends import (BACKENDS, KNOBS, Backend, UnknownBackendError, backend_for, get_backend,
                                      load_runner)
from edgenas.runtime.targets import measure_args
from edgenas.types import ArchConfig, Candidate


def test_every_backend_has_a_converter_and_a_distinct_suffix() -> None:
    for name, backend in BACKENDS.items():
        module = converter(name)
        assert callable(module.convert) and callable(module.describe)
        assert backend.exporters[0] == "default"
        assert {tool for tool, _ in backend.tools} <= set(versioned_tools())
        assert backend_for(f"x/model{backend.suffix}") is backend
    assert len({b.suffix for b in BACKENDS.values()}) == len(BACKENDS)


def test_every_mode_names_a_real_nearest_mode_in_each_other_backend() -> None:
    for name, backend in BACKENDS.items():
        for mode in backend.modes:
            assert set(mode.nearest) == set(BACKENDS) - {name}, (name, mode.name)
            for other, nearest in mode.nearest.items():
                assert get_backend(other).mode(nearest).weights in ("fp32", "fp16", "int8")
            assert mode.needs_calibration == (mode.activations.endswith("calibrated"))


def test_unknown_names_are_one_line_errors_listing_the_choices() -> None:
    with pytest.raises(UnknownBackendError, match="unknown runtime 'tvm'; choose one of tflite, onnxruntime, executorch"):
        get_backend("tvm")
    with pytest.raises(UnknownBackendError, match="unknown executorch mode 'fp16'; choose one of fp32, dynamic_int8"):
        get_backend("executorch").mode("fp16")
    with pytest.raises(UnknownBackendError, match=r"expected \.tflite, \.onnx, \.pte"):
        load_runner(Path("model.pt"))


def test_knobs_belong_to_their_backend() -> None:
    onnx, tflite = get_backend("onnxruntime"), get_backend("tflite")
    mixed = {"xnnpack": False, "graph_optimization": "basic"}
    assert onnx.own_knobs(mixed) == {"graph_optimization": "basic"}
    assert tflite.own_knobs(mixed) == {"xnnpack": False}
    assert get_backend("executorch").own_knobs(mixed) == {}
    assert onnx.own_knobs({}) == {"graph_optimization": "all"}  # the default when none is given
    assert KNOBS["xnnpack"].parse("FALSE") is False and KNOBS["graph_optimization"].parse("basic") == "basic"
    with pytest.raises(UnknownBackendError, match="graph_optimization must be one of disable, basic, extended, all"):
        onnx.own_knobs({"graph_optimization": "max"})


def test_measure_arguments_come_from_the_catalog() -> None:
    args = measure_args("m.tflite", None, {"threads": 2, "xnnpack": False, "graph_optimization": "basic", "logits": True})
    assert args == ["m.tflite", "--threads", "2", "--logits", "--xnnpack", "false", "--graph-optimization", "basic"]
    # the child's parser reads back exactly the request the command line was written from
    from edgenas.runtime.measure import MeasureRequest, _parser

    request = MeasureRequest.of(threads=2, xnnpack=False, graph_optimization="basic", logits=True, cpus=[0, 1])
    parsed = _parser().parse_args(request.to_args("m.tflite", "d.npz"))
    assert MeasureRequest.from_namespace(parsed) == request and parsed.data == "d.npz"
    with pytest.raises(TypeError, match="unknown measurement knobs: speed"):
        MeasureRequest.of(speed=3)
    with pytest.raises(EdgenasError, match="xnnpack must be one of true, false"):
        measure_args("m.tflite", None, {"xnnpack": "sometimes"})


def test_default_candidates_are_the_installed_backends_searched_modes() -> None:
    runtimes = CandidateConfig().runtimes
    assert list(runtimes) == [name for name, b in BACKENDS.items() if b.missing() is None]
    assert runtimes["onnxruntime"] == ["fp32", "dynamic_int8", "dynamic_int8_per_channel", "static_int8_minmax"]
    assert runtimes["tflite"] == ["fp32", "dynamic_int8", "fp16", "full_int8"]


def test_knob_lists_may_stand_under_candidates_as_before_the_catalog() -> None:
    config = SearchConfig.model_validate({"candidates": {"xnnpack": [True, False], "graph_optimization": ["basic"]}})
    assert config.candidates.choices("xnnpack") == [True, False]
    assert config.candidates.choices("graph_optimization") == ["basic"]


def test_a_backend_missing_here_is_skipped_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Backend, "missing", lambda self: "executorch is not installed (pip install executorch)"
                        if self.name == "executorch" else None)
    config = CandidateConfig(runtimes={"onnxruntime": ["fp32"], "executorch": ["fp32"]})
    kept, missing = config.installed()
    assert list(kept.runtimes) == ["onnxruntime"]
    assert missing == {"executorch": "executorch is not installed (pip install executorch)"}
    with pytest.raises(ConfigError, match="none of the configured runtimes is installed"):
        CandidateConfig(runtimes={"executorch": ["fp32"]}).installed()


def test_candidates_stored_before_the_catalog_still_load() -> None:
    old = {"arch": ArchConfig().to_dict(), "runtime": "tflite", "quantization": "fp32", "seq_len": 64, "threads": 1,
           "graph_optimization": "all", "xnnpack": False}
    candidate = Candidate.from_dict(old)
    assert get_backend("tflite").own_knobs(candidate.knobs) == {"xnnpack": False}
    assert Candidate.from_dict(candidate.to_dict()) == candidate
