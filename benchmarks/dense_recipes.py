"""Dense-VGG recipes in a fixed budget: the course recipe against variants, same data and hardware.

Every recipe trains the profile's VGG from the same initial weights (same ``--seeds``) with
``helpers.train.train_dense`` for the same number of epochs (``--epochs``: the budget, the same
training images seen by every recipe), and is evaluated on the profile's test split after
every epoch. The recipes are variations of the course recipe (SGD, momentum 0.9, weight decay
5e-4, triangular one-cycle learning rate; batch 512, peak lr 0.4 under ``full``):

- ``course``: the course recipe itself;
- ``smooth``: label smoothing 0.1;
- ``small-batch``: a quarter of the batch and of the peak learning rate (the linear scaling
  rule), so four times the optimizer steps for the same images;
- ``small-batch-smooth``: both.

On CUDA every recipe already trains with autocast (bf16 on GPUs with bf16 hardware, fp16 with
loss scaling on older ones: ``helpers.train.autocast_dtype``), channels-last inputs and the data
in GPU memory (``helpers.train``, ``helpers.data.DeviceLoader``); on the CPU in fp32.

Each finished run is kept as a checkpoint in ``--out-dir`` (``<profile>-<recipe>-<epochs>ep-
seed<seed>.pth``, with its per-epoch record in ``meta``); a rerun with the same settings on the
same device type reuses it instead of training again, and an interrupted run resumes from its
``.partial`` file (``train_dense``), so a long comparison can be stopped and continued.

    .venv/bin/python benchmarks/dense_recipes.py --profile full                 # a GPU: 4 x 20 epochs
    .venv/bin/python benchmarks/dense_recipes.py --profile full --epochs 1 \\
        --recipes course small-batch --data DIR                                  # 2 CPU cores: 83 min
    .venv/bin/python benchmarks/dense_recipes.py --profile smoke                # check, seconds

Differences within a few tenths of a point are within the run-to-run noise of one seed; give
several ``--seeds`` to see it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a fresh clone
sys.path.insert(0, str(Path(__file__).resolve().parent))

LABEL_SMOOTHING = 0.1
BATCH_DIVISOR = 4

RECIPES = {
    "course": "the course recipe",
    "smooth": f"label smoothing {LABEL_SMOOTHING}",
    "small-batch": f"batch and peak lr / {BATCH_DIVISOR}",
    "small-batch-smooth": f"batch and peak lr / {BATCH_DIVISOR}, label smoothing {LABEL_SMOOTHING}",
}


def recipe_for(name: str, base, epochs: int):
    """The ``DenseRecipe`` called ``name``: ``base`` (the profile's course recipe) varied."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    recipe = replace(base, epochs=epochs)
    if name.startswith("small-batch"):
        recipe = replace(
            recipe, batch_size=max(1, base.batch_size // BATCH_DIVISOR), lr=base.lr / BATCH_DIVISOR
        )
    if name.endswith("smooth"):
        recipe = replace(recipe, label_smoothing=LABEL_SMOOTHING)
    return recipe


def checkpoint_path(out_dir: Path, profile: str, name: str, epochs: int, seed: int) -> Path:
    return out_dir / f"{profile}-{name}-{epochs}ep-seed{seed}.pth"


def finished_run(path: Path, config: dict, device_type: str) -> dict | None:
    """The ``meta`` of a finished checkpoint at ``path`` made with ``config`` on
    ``device_type``, or None (missing, unreadable, other settings or another device type)."""
    from helpers.checkpoints import CheckpointError, read_checkpoint

    if not path.is_file():
        return None
    try:
        meta = read_checkpoint(path).get("meta") or {}
    except CheckpointError:
        return None
    same_device = str(meta.get("device", "")).split(":")[0] == device_type
    return meta if meta.get("recipe") == config and same_device else None


def run_recipes(
    profile,
    names: list[str],
    epochs: int,
    seeds: list[int],
    out_dir: Path,
    device,
    verbose: bool = True,
) -> list[dict]:
    """Train (or reuse) every recipe for every seed; one row per (recipe, seed).

    Rows hold ``recipe``, ``seed``, ``settings`` (the ``DenseRecipe``), ``history`` (test
    accuracy after each epoch), ``accuracy`` (the last), ``wall_s`` (of the training run, from
    its checkpoint) and ``reused`` (an earlier run's checkpoint was used).
    """
    from helpers.train import default_recipe, dense_config, train_dense

    base = default_recipe(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        for name in names:  # recipes in turns within a seed: a load change hits them alike
            recipe = recipe_for(name, base, epochs)
            path = checkpoint_path(out_dir, profile.name, name, epochs, seed)
            config = dense_config(recipe, profile, seed)
            meta = finished_run(path, config, device.type)
            reused = meta is not None
            if meta is None:
                if verbose:
                    print(f"\n== {name} (seed {seed}): {RECIPES[name]}; {recipe}", flush=True)
                train_dense(
                    profile,
                    **asdict(recipe),  # DenseRecipe's fields are train_dense's settings
                    out=path,
                    seed=seed,
                    device=device,
                    verbose=verbose,
                )
                meta = finished_run(path, config, device.type)
                if meta is None:
                    raise RuntimeError(f"{path} was not written as expected")
            history = [h["test_accuracy"] for h in meta["history"]]
            rows.append(
                {
                    "recipe": name,
                    "seed": seed,
                    "settings": recipe,
                    "history": history,
                    "accuracy": float(meta["test_accuracy"]),
                    "wall_s": float(meta["wall_s"]),
                    "reused": reused,
                }
            )
    return rows


def steps_per_epoch(train_images: int, batch_size: int) -> int:
    return -(-train_images // batch_size)  # DeviceLoader keeps the last, smaller batch


def summary(rows: list[dict]) -> list[dict]:
    """Per recipe (in first-seen order): mean accuracy over seeds, its change against
    ``course`` (when run), seeds and median wall time."""
    names = list(dict.fromkeys(row["recipe"] for row in rows))
    means = {
        name: statistics.fmean(r["accuracy"] for r in rows if r["recipe"] == name) for name in names
    }
    out = []
    for name in names:
        mine = [r for r in rows if r["recipe"] == name]
        out.append(
            {
                "recipe": name,
                "seeds": len(mine),
                "accuracy": means[name],
                "spread": max(r["accuracy"] for r in mine) - min(r["accuracy"] for r in mine),
                "vs_course": means[name] - means["course"] if "course" in means else None,
                "wall_s": statistics.median(r["wall_s"] for r in mine),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    from helpers.data import seed_argument

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="full", choices=["smoke", "quick", "full"])
    parser.add_argument("--data", type=Path, default=None, help="LAB_DATA (default: data/)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument(
        "--epochs", type=int, default=None, help="the budget (default: the course's 20; smoke: 1)"
    )
    parser.add_argument("--seeds", type=seed_argument, nargs="+", default=[0])
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "runs" / "dense_recipes")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: the best)")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if len(set(args.recipes)) != len(args.recipes) or len(set(args.seeds)) != len(args.seeds):
        parser.error("give each recipe and each seed once")

    import os

    if args.data is not None:
        os.environ["LAB_DATA"] = str(args.data.resolve())

    import torch
    from lab_results import markdown

    from helpers.data import DataError, get_dataloaders, load_cifar10
    from helpers.profiles import get_device, get_profile
    from helpers.train import default_recipe

    profile = get_profile(args.profile)
    device = torch.device(args.device) if args.device else get_device()
    epochs = args.epochs or default_recipe(profile).epochs
    try:
        source = (
            "synthetic data, small VGG (smoke): every figure is meaningless"
            if profile.dataset == "synthetic"
            else load_cifar10()["source"]
        )
        probe = get_dataloaders(profile, device="cpu")
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    train_images, test_images = probe["train"].num_samples, probe["test"].num_samples
    del probe
    print(
        f"data: {source}\nprofile {profile.name}, device {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; budget {epochs} epoch(s) of {train_images:,} "
        f"training images per recipe; test images {test_images:,}; seeds {args.seeds}",
        flush=True,
    )
    began = time.perf_counter()
    rows = run_recipes(profile, args.recipes, epochs, args.seeds, args.out_dir, device)

    print("\nPer run (test accuracy in %; wall time of training and evaluation):\n")
    print(
        markdown(
            [
                {
                    "recipe": r["recipe"],
                    "seed": r["seed"],
                    "batch": r["settings"].batch_size,
                    "peak lr": r["settings"].lr,
                    "label smoothing": r["settings"].label_smoothing,
                    "steps": epochs * steps_per_epoch(train_images, r["settings"].batch_size),
                    "after each epoch (%)": ", ".join(f"{a:.2f}" for a in r["history"]),
                    "final (%)": f"{r['accuracy']:.2f}",
                    "wall s": f"{r['wall_s']:.0f}" + (" (reused)" if r["reused"] else ""),
                }
                for r in rows
            ]
        )
    )
    table = summary(rows)
    print(f"\nPer recipe (mean over {len(args.seeds)} seed(s)):\n")
    print(
        markdown(
            [
                {
                    "recipe": s["recipe"],
                    "what": RECIPES[s["recipe"]],
                    "accuracy (%)": f"{s['accuracy']:.2f}",
                    "spread over seeds (points)": f"{s['spread']:.2f}" if s["seeds"] > 1 else "",
                    "vs course (points)": (
                        f"{s['vs_course']:+.2f}" if s["vs_course"] is not None else ""
                    ),
                    "wall s (median)": f"{s['wall_s']:.0f}",
                }
                for s in table
            ]
        )
    )
    best = max(table, key=lambda s: s["accuracy"])
    line = f"\nbest in {epochs} epoch(s): {best['recipe']}, {best['accuracy']:.2f}%"
    if best["vs_course"] is not None:
        line += f" ({best['vs_course']:+.2f} points against the course recipe)"
    print(line)
    print(f"benchmark wall time {time.perf_counter() - began:.0f} s; checkpoints in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
