"""edgenas.runtime: runners, measure, local target, drift, `edgenas bench` on tiny real artifacts."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgenas.cli import main
from edgenas.runtime.drift import DriftMonitor
from edgenas.runtime.measure import NOISE_LIMIT, measure, median_uncertainty
from edgenas.runtime.measurement import Measurement
from edgenas.runtime.backends import load_runner
from edgenas.runtime.runners import INPUT_KEYS, RuntimeLoadError
from edgenas.runtime.targets import DeviceError, LocalTarget, SSHTarget, target_from_url

VOCAB, HIDDEN, LABELS, SEQ = 5000, 8, 3, 16
RESULT_KEYS = {"median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "cv", "peak_rss_mb", "runtime", "threads",
               "device", "runs", "seq_len"}
OWN_KNOB = {"onnx": "graph_optimization", "tflite": "xnnpack"}  # each result names its runtime's knobs only
HEAVY = ("torch", "tensorflow", "transformers", "optuna", "keras", "tf_keras", "jax")


def tiny_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Embedding, token-type embedding and classifier of the tiny model."""
    rng = np.random.default_rng(seed)
    return {"emb": rng.normal(size=(VOCAB, HIDDEN)).astype(np.float32),
            "typ": rng.normal(size=(2, HIDDEN)).astype(np.float32),
            "W": rng.normal(size=(HIDDEN, LABELS)).astype(np.float32),
            "b": rng.normal(size=(LABELS,)).astype(np.float32)}


def reference_logits(w: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> np.ndarray:
    """What every tiny artifact computes: masked mean of embeddings, then a linear layer."""
    x = (w["emb"][feeds["input_ids"]] + w["typ"][feeds["token_type_ids"]]) * feeds["attention_mask"][..., None]
    return x.mean(axis=1) @ w["W"] + w["b"]


def build_onnx(path: Path, w: dict[str, np.ndarray]) -> Path:
    """The tiny classifier as ONNX (int64 inputs, dynamic batch and sequence)."""
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()] + [numpy_helper.from_array(np.array([2]), "ax")]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
             helper.make_node("Gather", ["typ", "token_type_ids"], ["t"]),
             helper.make_node("Add", ["e", "t"], ["x"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "ax"], ["m3"]),
             helper.make_node("Mul", ["x", "m3"], ["xm"]),
             helper.make_node("ReduceMean", ["xm"], ["pooled"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["pooled", "W"], ["pw"]),
             helper.make_node("Add", ["pw", "b"], ["logits"])]
    inputs = [helper.make_tensor_value_info(k, TensorProto.INT64, ["batch", "seq"]) for k in INPUT_KEYS]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", LABELS])
    model = helper.make_model(helper.make_graph(nodes, "tiny", inputs, [output], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


TFLITE_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    w, out = dict(np.load(sys.argv[1])), sys.argv[2]
    def convert(batch, int8=False):
        spec = [tf.TensorSpec([batch, {seq}], tf.int64, name=n) for n in ("input_ids", "attention_mask", "token_type_ids")]
        @tf.function(input_signature=spec)
        def f(input_ids, attention_mask, token_type_ids):
            x = (tf.gather(w["emb"], input_ids) + tf.gather(w["typ"], token_type_ids))
            x = x * tf.cast(attention_mask, tf.float32)[..., None]
            return {{"logits": tf.matmul(tf.reduce_mean(x, 1), w["W"]) + w["b"]}}
        conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
        if int8:
            rng = np.random.default_rng(1)
            def rep():
                for _ in range(16):
                    ids = rng.integers(0, {vocab}, size=(1, {seq}))
                    yield [ids, np.ones_like(ids), np.zeros_like(ids)]
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = rep
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_output_type = tf.int8
        return conv.convert()
    open(out + "/tiny.tflite", "wb").write(convert(None))
    open(out + "/tiny_b1.tflite", "wb").write(convert(1))
    open(out + "/tiny_int8.tflite", "wb").write(convert(None, int8=True))
""").format(seq=SEQ, vocab=VOCAB)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tiny.onnx, tiny.tflite (dynamic batch), tiny_b1.tflite (batch 1), tiny_int8.tflite, data.npz, weights."""
    out = tmp_path_factory.mktemp("artifacts")
    w = tiny_weights()
    np.savez(out / "weights.npz", **w)
    # TensorFlow converts in a child so this test process never imports it (nor mixes it with torch).
    proc = subprocess.run([sys.executable, "-c", TFLITE_SCRIPT, str(out / "weights.npz"), str(out)],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rng = np.random.default_rng(2)
    ids = rng.integers(0, VOCAB, size=(40, SEQ))
    mask = np.ones_like(ids)
    mask[:, 12:] = 0
    types = np.zeros_like(ids)
    types[:, 8:] = 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    np.savez(out / "data.npz", **feeds, labels=reference_logits(w, feeds).argmax(axis=1))
    return {"onnx": build_onnx(out / "tiny.onnx", w), "tflite": out / "tiny.tflite", "tflite_b1": out / "tiny_b1.tflite",
            "tflite_int8": out / "tiny_int8.tflite", "data": out / "data.npz", "weights": out / "weights.npz"}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Device locks and known_hosts go to a fresh cache dir."""
    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(tmp_path / "cache"))


def _data(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.mark.parametrize("kind,runtime,seq_len,atol", [("onnx", "onnxruntime", None, 1e-5), ("tflite", "tflite", SEQ, 1e-5),
                                                       ("tflite_b1", "tflite", SEQ, 1e-5), ("tflite_int8", "tflite", SEQ, 0.8)])
def test_runner_logits_match_reference(artifacts: dict[str, Path], kind: str, runtime: str, seq_len: int | None,
                                       atol: float) -> None:
    runner = load_runner(artifacts[kind])
    assert (runner.runtime, runner.seq_len) == (runtime, seq_len)
    assert all(any(k in name for k in INPUT_KEYS) for name in runner.input_names)
    data = _data(artifacts["data"])
    feeds = {k: data[k] for k in INPUT_KEYS}
    expected = reference_logits(dict(np.load(artifacts["weights"])), feeds)
    # 40 rows in batches of 16: the last batch is short, and a batch-1 model loops over rows.
    logits = runner.predict_logits(feeds, batch_size=16)
    assert logits.dtype == np.float32 and logits.shape == (40, LABELS)
    np.testing.assert_allclose(logits, expected, atol=atol)
    # Back to batch 1 after batched runs (TFLite re-plans on resize).
    np.testing.assert_allclose(runner.run({k: v[:1] for k, v in feeds.items()}), expected[:1], atol=atol)


def test_runner_pads_short_sequences_for_fixed_length_tflite(artifacts: dict[str, Path]) -> None:
    data = _data(artifacts["data"])
    short = {k: data[k][:4, :12] for k in INPUT_KEYS}  # positions 12.. are masked out anyway
    np.testing.assert_allclose(load_runner(artifacts["tflite"]).predict_logits(short),
                               load_runner(artifacts["onnx"]).predict_logits({k: data[k][:4] for k in INPUT_KEYS}),
                               atol=1e-5)


def test_load_runner_rejects_bad_artifacts(tmp_path: Path) -> None:
    for name in ("junk.onnx", "junk.tflite", "model.pt"):
        (tmp_path / name).write_bytes(b"not a model")
        with pytest.raises(RuntimeLoadError, match=name.replace(".", r"\.")):
            load_runner(tmp_path / name)
    with pytest.raises(RuntimeLoadError, match="does not exist"):
        load_runner(tmp_path / "absent.onnx")


@pytest.mark.parametrize("kind", ["onnx", "tflite"])
def test_measure_reports_latency_and_accuracy(artifacts: dict[str, Path], kind: str) -> None:
    result = measure(artifacts[kind], artifacts["data"], runs=5, warmup=1)
    record = json.loads(json.dumps(result.to_json()))
    assert RESULT_KEYS <= set(record) and OWN_KNOB[kind] in record and set(OWN_KNOB.values()) - {OWN_KNOB[kind]} - set(record)
    assert result.accuracy == 1.0 and result.n_eval == 40 and result.seq_len == SEQ
    assert 0 < result.median_ms <= result.p90_ms <= result.p99_ms
    assert result.peak_rss_mb > 0 and result.cv >= 0
    assert Measurement.from_json(record) == result  # what a target reads back is what was measured


def test_measure_without_data_synthesizes_input(artifacts: dict[str, Path]) -> None:
    assert measure(artifacts["onnx"], runs=2, warmup=0).seq_len == 128  # dynamic: default length
    result = measure(artifacts["tflite"], runs=2, warmup=0, xnnpack=False)
    assert (result.seq_len, result.knobs["xnnpack"]) == (SEQ, False) and not result.scored
    assert "accuracy" not in result.to_json()


def test_measure_module_prints_error_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"junk")
    proc = subprocess.run([sys.executable, "-m", "edgenas.runtime.measure", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 3
    payload = json.loads(proc.stdout)
    assert payload["kind"] == "rejected" and "bad.tflite" in payload["error"]


def test_runtime_imports_no_heavy_packages(artifacts: dict[str, Path]) -> None:
    code = textwrap.dedent(f"""
        import json, sys
        import edgenas.runtime, edgenas.runtime.runners, edgenas.runtime.targets, edgenas.runtime.drift
        from edgenas.runtime.measure import measure
        measure({str(artifacts['onnx'])!r}, runs=1, warmup=0)
        measure({str(artifacts['tflite'])!r}, {str(artifacts['data'])!r}, runs=1, warmup=0)
        print(json.dumps(sorted(sys.modules)))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(proc.stdout.splitlines()[-1])}
    assert {"onnxruntime", "ai_edge_litert", "numpy"} <= loaded
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_local_target_measures_in_child_process(artifacts: dict[str, Path]) -> None:
    target = LocalTarget(cpu_affinity=[0])
    result = target.measure(artifacts["tflite"], artifacts["data"], threads=1, runs=3, warmup=1)
    assert RESULT_KEYS <= set(result.to_json()) and result.accuracy == 1.0
    assert result.target == target.name and target.name.startswith("local:")


def test_scoring_split_over_processes_gives_the_same_logits(artifacts: dict[str, Path]) -> None:
    # in a target's child (run as `python -m`) and in this process: spawned workers import either
    for name in ("onnx", "tflite"):
        one, two = (LocalTarget().measure(artifacts[name], artifacts["data"], runs=1, warmup=0, logits=True,
                                          score_jobs=jobs) for jobs in (1, 2))
        here = measure(artifacts[name], artifacts["data"], runs=1, warmup=0, logits=True, score_jobs=3)
        assert one.logits == two.logits == here.logits and one.accuracy == two.accuracy == here.accuracy == 1.0
    with pytest.raises(ValueError, match="score_jobs >= 0"):
        measure(artifacts["onnx"], artifacts["data"], runs=1, score_jobs=-1)


def test_local_target_errors_name_device_and_cause(artifacts: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    target = LocalTarget()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    with pytest.raises(DeviceError, match=rf"^{target.name}: artifact rejected: .*bad\.onnx"):
        target.measure(bad)
    with pytest.raises(DeviceError, match="does not exist"):
        target.measure(tmp_path / "absent.onnx")
    # A Python without site-packages: numpy itself is missing.
    bare = LocalTarget(python=f"{shlex.quote(sys.executable)} -S")
    with pytest.raises(DeviceError, match=r"runtime library missing on device: .*numpy"):
        bare.measure(artifacts["onnx"], runs=1, warmup=0)
    # Real numpy but no onnxruntime on the path: the runtime's own install hint comes back.
    only_numpy = tmp_path / "only_numpy"
    only_numpy.mkdir()
    site = Path(np.__file__).parent.parent
    for name in ("numpy", "numpy.libs"):
        if (site / name).exists():
            (only_numpy / name).symlink_to(site / name)
    monkeypatch.setenv("PYTHONPATH", str(only_numpy))
    with pytest.raises(DeviceError, match=r"runtime library missing on device: onnxruntime is not installed"):
        bare.measure(artifacts["onnx"], runs=1, warmup=0)


def test_drift_monitor_times_reference_at_intervals(artifacts: dict[str, Path]) -> None:
    monitor = DriftMonitor(LocalTarget(), artifacts["onnx"], every=2, reference_knobs={"runs": 3, "warmup": 0})
    results = [monitor.measure(artifacts["tflite"], runs=2, warmup=0) for _ in range(3)]
    assert len(monitor.history) == 2  # before measurement 1 and 3
    first, last = results[0], results[-1]
    assert first.drift == 0.0 and first.reference_median_ms == first.reference_baseline_ms
    assert last.reference_baseline_ms == monitor.history[0]["median_ms"]
    assert last.reference_median_ms == monitor.history[1]["median_ms"]
    assert last.drift == pytest.approx(last.reference_median_ms / last.reference_baseline_ms - 1)


def test_target_from_url() -> None:
    assert isinstance(target_from_url("local"), LocalTarget)
    ssh = target_from_url("ssh://pi@raspberrypi.local:2222")
    assert isinstance(ssh, SSHTarget) and ssh.name == "pi@raspberrypi.local:2222"
    with pytest.raises(DeviceError, match="unknown target"):
        target_from_url("adb://phone")


def test_bench_json(artifacts: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    main(["bench", str(artifacts["onnx"]), "--json", "--runs", "3", "--warmup", "1", "--threads", "1",
          "--data", str(artifacts["data"]), "--graph-optimization", "basic"])
    result = json.loads(capsys.readouterr().out)
    assert {"median_ms", "p90_ms", "p99_ms", "mean_ms", "cv", "peak_rss_mb", "runtime", "threads", "device"} <= set(result)
    assert result["accuracy"] == 1.0 and result["graph_optimization"] == "basic"


def test_bench_times_a_dynamic_artifact_at_the_asked_length(artifacts: dict[str, Path],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    main(["bench", str(artifacts["onnx"]), "--json", "--runs", "3", "--warmup", "0", "--seq-len", "24"])
    assert json.loads(capsys.readouterr().out)["seq_len"] == 24  # without --seq-len: 128
    with pytest.raises(SystemExit):
        main(["bench", str(artifacts["tflite_b1"]), "--runs", "3", "--seq-len", str(SEQ + 1)])
    assert f"is compiled for sequence length {SEQ}, not {SEQ + 1}" in capsys.readouterr().err


def test_bench_table_and_error(artifacts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["bench", str(artifacts["tflite"]), "--runs", "3", "--warmup", "0", "--no-xnnpack"])
    out = capsys.readouterr().out
    assert "median_ms" in out and "tflite" in out
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"junk")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "artifact rejected" in err and "local:" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["bench", str(artifacts["onnx"]), "--graph-optimization", "max"])
    assert "graph_optimization must be one of disable, basic, extended, all" in capsys.readouterr().err


def test_peak_memory_is_the_child_own_not_its_parent(tmp_path: Path) -> None:
    """A measurement child of a big parent reports its own peak (ru_maxrss would inherit the parent's)."""
    import subprocess
    import sys

    ballast = bytearray(400 * 2**20)  # make this (parent) process big
    ballast[::4096] = b"x" * len(ballast[::4096])
    code = "from edgenas.runtime.measure import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child < 300
    del ballast


def test_batch_1_scores_do_not_depend_on_the_other_rows(artifacts: dict[str, Path], tmp_path: Path) -> None:
    """Dynamic int8 takes activation ranges over the batch; batch 1 (what accuracy uses) removes that."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = tmp_path / "tiny_dynamic_int8.onnx"
    quantize_dynamic(artifacts["onnx"], quantized, weight_type=QuantType.QInt8)
    runner = load_runner(quantized)
    data = _data(artifacts["data"])
    feeds = {k: data[k] for k in INPUT_KEYS}
    alone = np.concatenate([runner.run({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(8)])
    np.testing.assert_array_equal(runner.predict_logits(feeds, batch_size=1)[:8], alone)
    assert not np.array_equal(runner.predict_logits(feeds, batch_size=40)[:8], alone)  # the effect is real
    assert measure(quantized, artifacts["data"], runs=2, warmup=0).accuracy == float(
        (runner.predict_logits(feeds, batch_size=1).argmax(1) == data["labels"]).mean())


def test_median_uncertainty_sees_drift_between_blocks() -> None:
    steady = np.tile([5.0, 5.1, 4.9, 5.2, 5.0], 20)
    drifting = np.repeat([5.0, 5.5, 6.0, 5.2, 6.5], 20)  # same spread of runs in time-ordered blocks
    assert median_uncertainty(steady) < 0.01 < NOISE_LIMIT < median_uncertainty(drifting)
    assert median_uncertainty(steady[:9]) == float("inf")  # too few runs to tell


def test_timing_goes_on_while_noisy_and_keeps_every_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A noisy start doubles the runs up to max_runs; a steady one stops at runs; nothing is dropped."""
    import edgenas.runtime.measure as m

    calls: list[int] = []

    def fake_time_runs(runner: object, feeds: object, warmup: int, runs: int) -> np.ndarray:
        calls.append(runs)
        return np.repeat([1.0, 3.0], runs // 2) if len(calls) == 1 else np.full(runs, 2.0)

    monkeypatch.setattr(m, "time_runs", fake_time_runs)
    times = m.time_until_stable(None, {}, warmup=0, runs=20, max_runs=200)  # type: ignore[arg-type]
    assert calls == [20, 20, 40, 80] and len(times) == 160 and times.min() == 1.0 and times.max() == 3.0
    calls.clear()
    assert len(m.time_until_stable(None, {}, warmup=0, runs=20, max_runs=30)) == 30  # type: ignore[arg-type]
    assert calls == [20, 10]


def test_measure_reports_its_noise(artifacts: dict[str, Path]) -> None:
    result = measure(artifacts["onnx"], runs=20, warmup=1, max_runs=40)
    assert 20 <= result.runs <= 40 and result.median_ci95 >= 0
    assert result.noisy == (result.median_ci95 > NOISE_LIMIT)
    with pytest.raises(ValueError, match="max_runs"):
        measure(artifacts["onnx"], runs=20, max_runs=10)


def test_measure_can_return_the_logits_it_scored(artifacts: dict[str, Path]) -> None:
    """compare reads agreement with torch from these, so the rows are scored once, where they are timed."""
    result = measure(artifacts["onnx"], artifacts["data"], runs=10, warmup=0, logits=True)
    data = _data(artifacts["data"])
    expected = load_runner(artifacts["onnx"]).predict_logits({k: data[k] for k in INPUT_KEYS}, batch_size=1)
    np.testing.assert_allclose(np.array(result.logits), expected, atol=1e-6)
    assert measure(artifacts["onnx"], artifacts["data"], runs=10, warmup=0).logits is None


def test_a_measurement_waiting_for_the_device_says_who_holds_it(tmp_path, monkeypatch, capsys) -> None:
    import threading

    from edgenas.runtime.targets import device_lock

    monkeypatch.setenv("EDGENAS_CACHE_DIR", str(tmp_path))
    held, release, order = threading.Event(), threading.Event(), []

    def holder() -> None:
        with device_lock("local:test"):
            held.set()
            release.wait(5)
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    threading.Timer(0.2, release.set).start()
    with device_lock("local:test"):
        order.append("waiter in")
    thread.join()
    assert order == ["holder done", "waiter in"]
    assert f"waiting for local:test: another measurement (pid {os.getpid()}) is timing it" in capsys.readouterr().err
    with device_lock("local:test"):  # free: no message
        pass
    assert capsys.readouterr().err == ""
