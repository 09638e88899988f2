"""How far the supernet's inherited weights can be trusted, on the tweets.

For the max, the min and N-2 seeded random subnets of the `minilm` space: dev and
test accuracy (torch) inherited from the search's supernet, and after a stand-alone
fine-tune of the same subnet cut from the pretrained MiniLM with distillation from
the search's teacher; Kendall tau between the two rankings. Also: the max subnet
against the teacher, the best 1-layer subnet against tuned TF-IDF, and the file size
of the smallest subnet as ONNX / TFLite dynamic int8, with and without vocabulary
trimming.

    python benchmarks/supernet_quality.py                 # the demo's supernet (its cache is reused)
    python benchmarks/supernet_quality.py --recipe cpu --standalone-steps 300   # the deployed pipeline's supernet
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import common
from edgenas.recipe import RECIPE_NAMES
from edgenas.search.space import SearchSpace


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser(__doc__)
    p.add_argument("--recipe", choices=RECIPE_NAMES, default="demo", help="the named training budget")
    p.add_argument("--steps", type=int, help="supernet sandwich steps (default: the recipe's)")
    p.add_argument("--teacher-steps", type=int, help="teacher fine-tune steps (default: the recipe's)")
    p.add_argument("--standalone-steps", type=int, default=150, help="steps of each stand-alone fine-tune")
    p.add_argument("--subnets", type=int, default=10, help="max, min and this many minus 2 random subnets")
    args = p.parse_args(argv)
    run = common.Run("supernet_quality", args.quick, args.out, argv)
    if args.quick:
        args.steps, args.teacher_steps, args.standalone_steps, args.subnets = 2, 2, 2, 3
    figures = measure(args)
    return run.finish(figures, markdown(figures), args.write_results)


def measure(args) -> dict[str, Any]:
    from rich.console import Console

    from edgenas.config import SearchConfig
    from edgenas.search.study.runner import load_trained_task
    from edgenas.search.training.loop import encode_split

    overrides = {k: v for k, v in (("steps", args.steps), ("teacher_steps", args.teacher_steps)) if v is not None}
    config = SearchConfig.model_validate({"recipe": args.recipe, "supernet": overrides})
    trained = load_trained_task(config, Console(stderr=True), progress=True)
    splits, tokenizer = trained.splits, trained.tokenizer
    limit = 200 if args.quick else None
    sets = {split: encode_split(tokenizer, getattr(splits, split), 64, limit, 0) for split in ("dev", "test")}
    archs = subnets(trained.space, args.subnets, seed=0)
    pretrained = pretrained_supernet(trained.space, tokenizer, splits.num_labels)
    rows = []
    for arch in archs:
        standalone = standalone_model(pretrained, arch, trained.data, args.standalone_steps, config)
        row = {"subnet": arch.short(), "layers": arch.num_hidden_layers}
        for split, (encoded, labels) in sets.items():
            row[f"inherited_{split}"] = accuracy_of(trained.supernet, encoded, labels, arch)
            row[f"standalone_{split}"] = accuracy_of(standalone, encoded, labels)
        rows.append(row)
        print(row, flush=True)
    return {
        "recipe": config.train_recipe().to_dict(), "standalone_steps": args.standalone_steps, "subnets": rows,
        "kendall_tau": {split: kendall(rows, split) for split in sets},
        "teacher": teacher_accuracy(trained, config, sets),
        "one_layer": one_layer_figures(trained, sets),
        "baselines": baseline_figures(trained, limit),
        "sizes": smallest_sizes(trained, archs[1]),
        "n": {split: int(len(labels)) for split, (_, labels) in sets.items()},
    }


def subnets(space: SearchSpace, count: int, seed: int) -> list:
    """Max, min, then distinct seeded random sub-configs."""
    archs = [space.max_arch(), space.min_arch()]
    rng = random.Random(seed)
    while len(archs) < count:
        arch = space.sample(rng)
        if arch not in archs:
            archs.append(arch)
    return archs[:count]


def pretrained_supernet(space: SearchSpace, tokenizer, num_labels: int):
    """The space's pretrained weights in a supernet, untouched by the task: where stand-alone training starts."""
    from edgenas.search.training.supernet import MobileBertSupernet
    from edgenas.search.training.teacher import resolve_checkpoint

    net = MobileBertSupernet(space.max_arch(), len(tokenizer), num_labels, family=space.family, layers=space.layers)
    net.load_checkpoint(resolve_checkpoint(space.init))
    return net


def standalone_model(pretrained, arch, data, steps: int, config):
    """The subnet cut from the pretrained weights, fine-tuned alone on labels + the teacher's logits."""
    from edgenas.search.training.train import finetune_subnet

    recipe = config.train_recipe()
    return finetune_subnet(pretrained, arch, data, steps=steps, batch_size=recipe.batch_size, lr=recipe.teacher_lr,
                           distill_weight=recipe.distill_weight, temperature=recipe.temperature,
                           threads=recipe.threads, device=recipe.device)


def accuracy_of(model, encoded, labels, arch=None) -> float:
    from edgenas.search.training.loop import accuracy

    return round(accuracy(model, encoded, labels, arch), 4)


def kendall(rows: list[dict[str, Any]], split: str) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau([r[f"inherited_{split}"] for r in rows], [r[f"standalone_{split}"] for r in rows]).statistic
    return round(float(tau), 3)


def teacher_accuracy(trained, config, sets) -> dict[str, float]:
    """The search's teacher (from the cache) on the same examples."""
    from edgenas.paths import cache_root
    from edgenas.search.training.teacher import load_teacher

    recipe = config.train_recipe()
    teacher, _ = load_teacher(recipe.teacher, trained.splits, trained.tokenizer, recipe,
                              cache_root() / "supernets", progress=False)
    return {split: accuracy_of(teacher, encoded, labels) for split, (encoded, labels) in sets.items()}


def one_layer_figures(trained, sets) -> dict[str, Any]:
    """The most accurate 1-layer subnet on dev (inherited), among the widest ones, and its test accuracy."""
    space = trained.space
    candidates = {space.arch({**space.max_arch().to_dict(), "num_hidden_layers": 1, "embedding_size": e})
                  for e in space.choices["embedding_size"]}
    scored = [(accuracy_of(trained.supernet, *sets["dev"], arch), arch) for arch in candidates]
    dev, best = max(scored, key=lambda pair: pair[0])
    return {"subnet": best.short(), "dev": dev, "test": accuracy_of(trained.supernet, *sets["test"], best)}


def baseline_figures(trained, limit: int | None) -> dict[str, dict[str, float]]:
    from edgenas.search.data.baselines import load_baselines
    from edgenas.paths import cache_root

    baselines = load_baselines(trained.splits, cache_root() / "baselines")
    if limit is None:
        return baselines.table(trained.splits)
    rows = np.arange(min(limit, len(trained.splits.dev)))
    return {name: {"dev": baselines.accuracy(name, "dev", trained.splits.dev.labels, rows)} for name in ("majority", "tfidf")}


def smallest_sizes(trained, arch) -> dict[str, Any]:
    """File sizes of `arch` (dynamic int8, ONNX and TFLite) with the full and the trimmed vocabulary."""
    from edgenas.compile import compile_artifact
    from edgenas.search.data.vocab import VocabTrim

    vocab = VocabTrim.from_texts(trained.tokenizer, trained.splits.train.texts)
    sizes: dict[str, Any] = {"subnet": arch.short(), "vocabulary": {"kept": vocab.size, "of": vocab.full_size}}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("full", "trimmed"):
            model = trained.supernet.extract(arch)
            if label == "trimmed":
                vocab.trim_model(model)
            model_dir = Path(tmp) / label
            model.save_pretrained(model_dir)
            for runtime in ("onnxruntime", "tflite"):
                artifact = compile_artifact(model_dir, runtime, "dynamic_int8", seq_len=64, cache_dir=Path(tmp) / "cache")
                sizes[f"{runtime}_{label}_mb"] = round(artifact.meta["size_bytes"] / 1e6, 2)
    return sizes


def markdown(f: dict[str, Any]) -> str:
    r, n = f["recipe"], f["n"]
    lines = [
        f"Supernet: the `minilm` space, teacher {r['teacher']} fine-tuned {r['teacher_steps']} steps (lr "
        f"{r['teacher_lr']:g}), then {r['steps']} sandwich steps (batch {r['batch_size']}, seq {r['seq_len']}, "
        f"{r['max_train_examples'] or 'all'} training examples). Stand-alone: each subnet cut from the pretrained "
        f"MiniLM and fine-tuned {f['standalone_steps']} steps on labels + the teacher's logits. Torch accuracy on "
        f"{n['dev']} dev / {n['test']} test examples.", "",
        common.table(f["subnets"], ["subnet", "inherited_dev", "standalone_dev", "inherited_test", "standalone_test"]),
        "",
        f"Kendall tau, inherited vs stand-alone: dev {f['kendall_tau']['dev']:.3f}, test {f['kendall_tau']['test']:.3f} "
        "(goal: at least 0.6).", "",
        f"Max subnet {f['subnets'][0]['subnet']}: inherited dev {f['subnets'][0]['inherited_dev']:.4f} / test "
        f"{f['subnets'][0]['inherited_test']:.4f}; teacher dev {f['teacher']['dev']:.4f} / test {f['teacher']['test']:.4f}.",
        f"Best 1-layer subnet {f['one_layer']['subnet']} (inherited): dev {f['one_layer']['dev']:.4f} / test "
        f"{f['one_layer']['test']:.4f}; TF-IDF + logistic regression dev {f['baselines']['tfidf']['dev']:.4f}"
        + (f" / test {f['baselines']['tfidf']['test']:.4f}" if "test" in f["baselines"]["tfidf"] else "")
        + f"; majority class dev {f['baselines']['majority']['dev']:.4f}.", "",
    ]
    s = f["sizes"]
    lines.append(f"Smallest subnet {s['subnet']}, dynamic int8: ONNX {s['onnxruntime_full_mb']} MB full vocabulary, "
                 f"{s['onnxruntime_trimmed_mb']} MB trimmed ({s['vocabulary']['kept']} of {s['vocabulary']['of']} "
                 f"tokens); TFLite {s['tflite_full_mb']} MB / {s['tflite_trimmed_mb']} MB.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
