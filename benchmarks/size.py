"""Size (P2): the smallest searched artifact within 2 points of the teacher vs BERT-large fp32.

BERT-large fp32 = the parameters of the standard BERT-large config (24 layers,
hidden 1024, 16 heads, intermediate 4096, 30522-token vocabulary), counted by
instantiating it on torch's meta device, times 4 bytes. The artifact size is the
file's bytes. Rahman et al. report 160x smaller at -4.1 points; target: >= 500x at
<= 2.0 points below the fine-tuned teacher (the accuracy reference), test split.

    python benchmarks/size.py --quick
    python benchmarks/size.py --write-results
"""

from __future__ import annotations

from typing import Any

import common
import deployed as dp

TARGET_RATIO, MAX_DROP_POINTS = 500.0, 2.0


def bert_large_params() -> int:
    """Parameters of the standard BERT-large (uncased) encoder with pooler."""
    import torch
    from transformers import BertConfig, BertModel

    with torch.device("meta"):
        model = BertModel(BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                     intermediate_size=4096))
    return int(sum(p.numel() for p in model.parameters()))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, run, record = dp.start("size", __doc__, argv)
    full = record["reference"]
    _, teacher = dp.best_reference(record)
    chosen = dp.pick(record["models"], teacher["dev_accuracy"] - MAX_DROP_POINTS / 100, by="size_bytes")
    params = bert_large_params()
    large_bytes = params * 4
    drop = (teacher["test_accuracy"] - chosen["test_accuracy"]) * 100
    figures = {
        "searched_model": {k: chosen[k] for k in ("trial", "arch", "runtime", "mode", "dev_accuracy", "test_accuracy",
                                                  "met_accuracy_rule")},
        "artifact_bytes": chosen["size_bytes"], "bert_large_params": params, "bert_large_fp32_bytes": large_bytes,
        "full_mobilebert_tflite_fp32_bytes": full["tflite"]["size_bytes"],
        "ratio_vs_bert_large": large_bytes / chosen["size_bytes"],
        "ratio_vs_full_mobilebert_tflite": full["tflite"]["size_bytes"] / chosen["size_bytes"],
        "test_accuracy": {"searched": chosen["test_accuracy"], "teacher_torch": teacher["test_accuracy"]},
        "drop_vs_teacher_points": drop,
        "pipeline": {k: record[k] for k in ("setup", "recipe", "train_examples", "build_seconds", "reused")},
    }
    figures["target_met"] = figures["ratio_vs_bert_large"] >= TARGET_RATIO and drop <= MAX_DROP_POINTS
    figures["majority_class_test_accuracy"] = dp.majority_accuracy(record)
    figures["warning"] = dp.majority_note(record, {"the searched model": chosen["test_accuracy"],
                                                   dp.teacher_label(record): teacher["test_accuracy"]})
    return run.finish(figures, markdown(figures, chosen, record), args.write_results)


def markdown(f: dict[str, Any], chosen: dict[str, Any], record: dict[str, Any]) -> str:
    """The size section."""
    rows = [
        {"model": "BERT-large fp32 (standard config, parameters x 4 bytes)", "MB": f["bert_large_fp32_bytes"] / 1e6,
         "ratio": f["ratio_vs_bert_large"]},
        {"model": "full MobileBERT (24 layers), TFLite fp32 file", "MB": f["full_mobilebert_tflite_fp32_bytes"] / 1e6,
         "ratio": f["ratio_vs_full_mobilebert_tflite"]},
        {"model": f"{dp.teacher_label(record)} (accuracy reference, torch)", "test accuracy": f["test_accuracy"]["teacher_torch"]},
        {"model": f"searched: {dp.model_label(chosen)}", "MB": f["artifact_bytes"] / 1e6, "ratio": 1.0,
         "test accuracy": f["test_accuracy"]["searched"]},
    ]
    rule = "" if chosen["met_accuracy_rule"] else " (none was within 2.0 points on dev: the most accurate was taken)"
    return "\n".join([
        f"Chosen: the smallest exported Pareto artifact within 2.0 points (dev) of the teacher{rule}; "
        f"ratio = other size / this artifact's size. BERT-large: {f['bert_large_params']:,} parameters.", "",
        common.table(rows, ["model", "MB", "ratio", "test accuracy"]), "",
        f"**{f['ratio_vs_bert_large']:.0f}x** smaller than BERT-large fp32 (Rahman et al.: 160x; target >= 500x); "
        f"test accuracy change vs the teacher **{-f['drop_vs_teacher_points']:+.2f} points** "
        f"(Rahman et al.: -4.1 vs BERT-large; target: no worse than -2.0). Target {common.verdict(f['target_met'])}." + (f" {f['warning']}" if f["warning"] else "")
        + ("" if f["target_met"] else " " + dp.closing_line(
            record, lambda m: m["size_bytes"] <= f["bert_large_fp32_bytes"] / TARGET_RATIO,
            f"of at most {f['bert_large_fp32_bytes'] / TARGET_RATIO / 1e6:.2f} MB", MAX_DROP_POINTS)
           + " " + size_levers(record)), "",
        dp.caps_line(record),
    ])


def size_levers(record: dict[str, Any]) -> str:
    """What the pipeline's setup already does for size, or what it could."""
    config = record["setup"]["config"]
    if config.get("trim_vocab") and dp.offers_int4(config):
        return ("The search already trims the vocabulary to the training text's tokens and offers ONNX Runtime's "
                "int4 weights; a file of the target's size holds about 4 M parameters in int4, and no sub-config "
                "that small has scored within 2 points of the teacher yet (the section's ad hoc table: 2.66 MB at "
                "-2.8).")
    return ("The word-embedding table (30,522 tokens x the embedding size, one byte each in int8) dominates a small "
            "artifact: `trim_vocab: true` keeps only the tokens the training text uses (about half on the tweets), "
            "and ONNX Runtime's `int4_weights` halves the rest.")


if __name__ == "__main__":
    main()
