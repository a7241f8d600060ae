"""Does channel sorting pay off? Lab 1's channel pruning at several ratios, sorted or not.

Lab 1 prunes 30% of the channels of every conv (keeping the first ones) and claims that
sorting the channels by importance first (the Frobenius norm of the next conv's input-channel
slice) loses less accuracy. This script checks that claim over a range of ratios with the
lab's own reference functions (the solution notebook's ``channel_prune`` and
``apply_channel_sorting``, run from ``autograder/source``), and separates two causes of the
loss before fine-tuning:

- the channels removed (what sorting is meant to choose better), and
- stale BatchNorm statistics: every BatchNorm after a pruned conv still holds the running
  mean and variance measured with all input channels present. "BN recalibrated" re-estimates
  them (a cumulative average over ``--recalibrate-batches`` training batches, no gradient,
  no weight changed) before evaluating.

For each ratio it prints the MACs, the share of the next convs' squared weight norm that the
kept channels carry (what sorting maximises), the test accuracy without and with sorting,
before and after BN recalibration, and the output distortion of the lab
(``||logits - dense logits|| / ||dense logits||`` on one test batch).

    .venv/bin/python benchmarks/channel_sorting.py --profile quick --data DIR   # minutes, CPU
    .venv/bin/python benchmarks/channel_sorting.py --profile smoke              # check, about 20 s

Every accuracy depends on the checkpoint in ``LAB_DATA`` (``--data``); its training record is
printed. Under ``smoke`` (synthetic data, small VGG) the figures are meaningless.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a fresh clone
sys.path.insert(0, str(Path(__file__).resolve().parent))

SOLUTION_CELLS = [
    "lab1_get_num_channels_to_keep_solution",
    "lab1_channel_prune_solution",
    "lab1_get_input_channel_importance_solution",
    "lab1_apply_channel_sorting_solution",
]


def recalibrate_batchnorm(model, batches) -> None:
    """Re-estimate every BatchNorm's running statistics from ``batches`` (weights unchanged)."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches, not an exponential one
    model.train()
    with torch.no_grad():
        for images in batches:
            model(images)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


def kept_norm_share(model, pruned) -> float:
    """Share of the squared weight norm of convs 1..n-1 that ``pruned`` keeps (input slices)."""
    from torch import nn

    convs = [m for m in model.backbone if isinstance(m, nn.Conv2d)][1:]
    kept = [m for m in pruned.backbone if isinstance(m, nn.Conv2d)][1:]
    total = sum(float(c.weight.detach().pow(2).sum()) for c in convs)
    return sum(float(c.weight.detach().pow(2).sum()) for c in kept) / total


def main(argv: list[str] | None = None) -> int:
    from helpers.data import seed_argument

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    parser.add_argument("--data", type=Path, default=None, help="LAB_DATA (default: data/)")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--recalibrate-batches", type=int, default=20)
    parser.add_argument("--seed", type=seed_argument, default=0)
    args = parser.parse_args(argv)
    if args.recalibrate_batches < 1:
        parser.error("--recalibrate-batches must be at least 1")
    if any(not 0 <= r < 1 for r in args.ratios):
        parser.error("every ratio must be in [0, 1)")

    import os

    if args.data is not None:
        os.environ["LAB_DATA"] = str(args.data.resolve())

    import torch
    from lab_results import checkpoint_line, markdown, solution_namespace
    from lab_runtimes import command_line
    from torch import nn
    from tqdm.auto import tqdm

    from helpers.checkpoints import load_dense_model
    from helpers.data import get_dataloaders
    from helpers.metrics import get_model_macs
    from helpers.profiles import data_dir, get_device, get_profile
    from helpers.train import evaluate

    torch.manual_seed(args.seed)
    lab = solution_namespace(
        "lab1_pruning", SOLUTION_CELLS, {"torch": torch, "nn": nn, "copy": copy}
    )
    channel_prune, apply_channel_sorting = lab["channel_prune"], lab["apply_channel_sorting"]

    profile = get_profile(args.profile)
    device = get_device()
    loaders = get_dataloaders(profile, device=device, seed=args.seed)
    model = load_dense_model(profile, device=device).eval()
    began = time.perf_counter()
    print(f"checkpoint: {checkpoint_line(data_dir().resolve(), profile.name)}")
    print(
        f"profile {profile.name}, device {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; test images {loaders['test'].num_samples:,}; "
        f"BN recalibration on {args.recalibrate_batches} training batches of {profile.batch_size}"
    )
    calibration = []
    for images, _ in loaders["train"]:
        calibration.append(images)
        if len(calibration) == args.recalibrate_batches:
            break

    dummy = torch.zeros(1, 3, 32, 32, device=device)
    dense_macs = get_model_macs(model, dummy)
    dense_accuracy = evaluate(model, loaders["test"], verbose=False)
    check_images = next(iter(loaders["test"]))[0][:256]
    with torch.inference_mode():
        dense_logits = model(check_images)

    def distortion(net) -> float:
        with torch.inference_mode():
            return float((net.eval()(check_images) - dense_logits).norm() / dense_logits.norm())

    sorted_model = apply_channel_sorting(model)
    rows = []
    for ratio in tqdm(args.ratios, desc="ratios"):
        bases = {"first": model, "sorted": sorted_model}
        pruned_models = {label: channel_prune(base, ratio) for label, base in bases.items()}
        pruned_macs = get_model_macs(pruned_models["first"], dummy)  # same shapes when sorted
        found: dict[str, dict[str, float]] = {}
        for label, pruned in pruned_models.items():
            found[label] = {"norm kept": kept_norm_share(bases[label], pruned)}
            found[label]["accuracy"] = evaluate(pruned, loaders["test"], verbose=False)
            found[label]["distortion"] = distortion(pruned)
            recalibrate_batchnorm(pruned, calibration)
            found[label]["recalibrated"] = evaluate(pruned, loaders["test"], verbose=False)
            found[label]["distortion recalibrated"] = distortion(pruned)
        first, best = found["first"], found["sorted"]
        rows.append(
            {
                "ratio": ratio,
                "fewer MACs": dense_macs / pruned_macs,
                "norm kept: first / sorted": f"{first['norm kept']:.3f} / {best['norm kept']:.3f}",
                "first (%)": first["accuracy"],
                "sorted (%)": best["accuracy"],
                "first, BN recal. (%)": first["recalibrated"],
                "sorted, BN recal. (%)": best["recalibrated"],
                "distortion: first / sorted": f"{first['distortion']:.3f} / {best['distortion']:.3f}",
                "after BN recal.": (
                    f"{first['distortion recalibrated']:.3f} / {best['distortion recalibrated']:.3f}"
                ),
            }
        )

    print(f"\n## Channel pruning before fine-tuning (test split, dense {dense_accuracy:.2f}%)\n")
    print(
        "'first': the lab's channel_prune keeps the first channels; 'sorted': "
        "apply_channel_sorting first. 'norm kept': share of the next convs' squared weight "
        "norm in the kept input channels.\n"
    )
    print(markdown(rows))
    print(f"\nwall time {time.perf_counter() - began:.0f} s")
    print(f"Command: {command_line(__file__, argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
