"""Accuracy-side figures of the search: supernet training time, max/min subnet
dev accuracy vs TF-IDF + logistic regression and vs the fine-tuned MiniLM
teacher, and Kendall tau of inherited-weight vs stand-alone accuracy.

    python benchmarks/supernet_quality.py --quick      # minutes
    python benchmarks/supernet_quality.py               # fuller (tens of minutes on 2 cores)

Prints a JSON record and a markdown table; every figure is measured here.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from edgenas.search.data.datasets import load_dataset
from edgenas.search.data.fetch import cache_root
from edgenas.search.space import SearchSpace, load_space
from edgenas.search.training.supernet import MobileBertSupernet
from edgenas.search.training.teacher import load_teacher
from edgenas.search.data.tokenizer import load_tokenizer
from edgenas.search.training.train import (
    TrainRecipe,
    _make_optimizer,
    batch_order,
    encode_split,
    evaluate_accuracy,
    limit_threads,
    load_trained_meta,
    sandwich_step,
    subsample,
    supernet_key,
    train_supernet,
)


def tfidf_baseline(splits, dev_texts: list[str], dev_labels: np.ndarray) -> float:
    """TF-IDF (word 1-2 grams) + logistic regression trained on the full train split."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = vectorizer.fit_transform(splits.train.texts)
    model = LogisticRegression(max_iter=2000, C=4.0).fit(features, splits.train.labels)
    return float((model.predict(vectorizer.transform(dev_texts)) == dev_labels).mean())


def distinct_subnets(space: SearchSpace, count: int, seed: int) -> list:
    """`count` distinct sub-configs: max, min, then seeded random samples."""
    archs = [space.max_arch(), space.min_arch()]
    rng = random.Random(seed)
    while len(archs) < count:
        arch = space.sample(rng)
        if arch not in archs:
            archs.append(arch)
    return archs[:count]


def time_sandwich_steps(space: SearchSpace, tokenizer, splits, recipe: TrainRecipe, steps: int) -> float:
    """Seconds per sandwich step of `space`'s supernet on real batches (after one warm-up step)."""
    torch.manual_seed(0)
    net = MobileBertSupernet(space.max_arch(), len(tokenizer), splits.num_labels)
    encoded, labels = encode_split(tokenizer, splits.train, recipe.seq_len, (steps + 1) * recipe.batch_size, 0)
    optimizer, _ = _make_optimizer(net.parameters(), recipe.lr, recipe.weight_decay, steps + 1, 0.1)
    batches = batch_order(len(labels), recipe.batch_size, 0, 0)
    times = []
    for step, index in enumerate(batches[: steps + 1]):
        started = time.perf_counter()
        sandwich_step(net, space, encoded, labels, index, None, recipe, step)
        optimizer.step()
        times.append(time.perf_counter() - started)
    return float(np.mean(times[1:]))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (minutes)")
    parser.add_argument("--steps", type=int, help="cap on supernet steps on the demo space (default: 1 epoch)")
    parser.add_argument("--train-examples", type=int, help="training subsample (default: all of train)")
    parser.add_argument("--dev-examples", type=int, help="dev subsample used by every accuracy figure")
    parser.add_argument("--subnets", type=int, default=8, help="subnets for Kendall tau (>= 8)")
    parser.add_argument("--standalone-steps", type=int, help="steps of each stand-alone subnet training")
    parser.add_argument("--teacher-examples", type=int, help="training examples of the MiniLM fine-tune (0: skip)")
    parser.add_argument("--mobilebert-steps", type=int, default=None, help="timed steps of the full MobileBERT supernet")
    parser.add_argument("--teacher-lr", type=float, default=5e-5)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON record here")
    args = parser.parse_args(argv)
    quick = args.quick
    steps = args.steps  # default: one epoch
    train_examples = args.train_examples
    dev_examples = args.dev_examples or (1000 if quick else None)
    standalone_steps = args.standalone_steps or (150 if quick else 500)
    teacher_examples = args.teacher_examples if args.teacher_examples is not None else (1000 if quick else 4000)
    mobilebert_steps = args.mobilebert_steps or (3 if quick else 10)
    cache = args.cache or cache_root() / "bench-supernet"
    limit_threads(args.threads)
    command = "python benchmarks/supernet_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])

    splits = load_dataset("tweets", seed=0)
    tokenizer = load_tokenizer()
    space = load_space("demo")
    # a seeded random subset: the split is ordered by label, so a prefix would be one class
    dev_texts, dev_labels = subsample(splits.dev.texts, splits.dev.labels, dev_examples, seed=0)
    dev, _ = encode_split(tokenizer, type(splits.dev)(dev_texts, dev_labels), 64)
    record: dict = {"command": command, "dev_examples": len(dev_labels), "train_examples_total": len(splits.train)}
    record["tfidf_logreg_dev_accuracy"] = tfidf_baseline(splits, dev_texts, dev_labels)
    record["majority_dev_accuracy"] = float(np.bincount(dev_labels).max() / len(dev_labels))

    recipe = TrainRecipe.demo(max_steps=steps, max_train_examples=train_examples, lr=args.lr, threads=args.threads)
    started = time.perf_counter()
    net = train_supernet(space, splits, tokenizer, recipe, cache, progress=True)
    meta = load_trained_meta(cache, supernet_key(space, splits, tokenizer, recipe))
    record["demo"] = {
        "space": space.name, "recipe": recipe.to_dict(), "steps": meta["steps"],
        "train_examples": meta["train_examples"], "epochs": meta["steps"] / meta["steps_per_epoch"],
        "train_seconds": meta["train_seconds"], "seconds_per_epoch_of_subsample": meta["seconds_per_epoch"],
        "seconds_per_full_train_epoch": meta["train_seconds"] / meta["steps"] * -(-len(splits.train) // 32),
        "cached": time.perf_counter() - started < 0.5 * meta["train_seconds"],
        "max_arch": space.max_arch().short(), "min_arch": space.min_arch().short(),
        "max_dev_accuracy": evaluate_accuracy(net, dev, dev_labels, arch=space.max_arch()),
        "min_dev_accuracy": evaluate_accuracy(net, dev, dev_labels, arch=space.min_arch()),
    }
    print(json.dumps({"demo": record["demo"]}, indent=1), flush=True)

    subnets = distinct_subnets(space, max(8, args.subnets), seed=1)
    standalone_recipe = replace(recipe, max_steps=standalone_steps, random_subnets_per_step=0)
    rows = []
    for arch in subnets:
        inherited = evaluate_accuracy(net, dev, dev_labels, arch=arch)
        alone = train_supernet(SearchSpace.point(arch), splits, tokenizer, standalone_recipe, cache, progress=True)
        rows.append({"arch": arch.short(), "inherited": inherited,
                     "standalone": evaluate_accuracy(alone, dev, dev_labels)})
        print(json.dumps(rows[-1]), flush=True)
    tau = kendalltau([r["inherited"] for r in rows], [r["standalone"] for r in rows])
    record["ranking"] = {"subnets": rows, "standalone_steps": standalone_steps,
                         "kendall_tau": float(tau.statistic), "p_value": float(tau.pvalue)}

    if teacher_examples:
        teacher_recipe = replace(recipe, max_train_examples=teacher_examples, teacher_epochs=1.0, teacher_lr=args.teacher_lr)
        started = time.perf_counter()
        teacher = load_teacher("minilm", splits, tokenizer, teacher_recipe, cache, progress=True)
        record["teacher"] = {"model": "all-MiniLM-L6-v2 fine-tuned", "train_examples": teacher_examples,
                             "lr": args.teacher_lr,
                             "epochs": 1.0, "seconds_incl_load": time.perf_counter() - started,
                             "dev_accuracy": evaluate_accuracy(teacher, dev, dev_labels)}
        print(json.dumps({"teacher": record["teacher"]}), flush=True)

    full = load_space("mobilebert")
    per_step = time_sandwich_steps(full, tokenizer, splits, replace(recipe, random_subnets_per_step=2), mobilebert_steps)
    record["mobilebert_timing"] = {
        "space": "mobilebert", "max_arch": full.max_arch().short(), "timed_steps": mobilebert_steps,
        "seconds_per_step": per_step, "steps_per_full_epoch": -(-len(splits.train) // 32),
        "extrapolated_seconds_per_full_epoch": per_step * -(-len(splits.train) // 32),
        "note": "timed steps (batch 32, seq 64, max+min+2 random subnets) extrapolated to one epoch of train",
    }
    print(json.dumps(record, indent=1))
    print(markdown(record))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return record


def markdown(record: dict) -> str:
    """The figures as a markdown table."""
    demo, rank, timing = record["demo"], record["ranking"], record["mobilebert_timing"]
    lines = [
        f"Command: `{record['command']}`  (dev examples: {record['dev_examples']})",
        "",
        "| figure | value |",
        "|---|---|",
        f"| demo supernet training ({demo['steps']} steps, {demo['train_examples']} examples, "
        f"{demo['epochs']:.2f} epochs) | {demo['train_seconds']:.0f} s |",
        f"| demo: s per full-train epoch ({record['train_examples_total']} examples) "
        f"| {demo['seconds_per_full_train_epoch']:.0f} s |",
        f"| mobilebert: s per full-train epoch (extrapolated from {timing['timed_steps']} steps of "
        f"{timing['seconds_per_step']:.2f} s) | {timing['extrapolated_seconds_per_full_epoch']:.0f} s |",
        f"| dev acc, max subnet {demo['max_arch']} | {demo['max_dev_accuracy']:.3f} |",
        f"| dev acc, min subnet {demo['min_arch']} | {demo['min_dev_accuracy']:.3f} |",
        f"| dev acc, TF-IDF + logistic regression | {record['tfidf_logreg_dev_accuracy']:.3f} |",
        f"| dev acc, majority class | {record['majority_dev_accuracy']:.3f} |",
    ]
    if "teacher" in record:
        lines.append(f"| dev acc, MiniLM teacher ({record['teacher']['train_examples']} train examples, 1 epoch) "
                     f"| {record['teacher']['dev_accuracy']:.3f} |")
    lines.append(f"| Kendall tau inherited vs stand-alone ({len(rank['subnets'])} subnets, "
                 f"{rank['standalone_steps']} steps each) | {rank['kendall_tau']:.3f} (p={rank['p_value']:.3f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
