"""Search a smaller fine-grained allocation than Lab 1's reference ``sparsity_dict``.

Lab 1 asks students to choose one sparsity per weight by hand, from the sensitivity scan and
the parameter counts. This script makes that choice automatically and checks it by
fine-tuning, to find how small the model can get at no lower accuracy:

1. Sensitivity curves: every conv and linear weight is pruned alone to each sparsity of
   ``--scan-sparsities`` and the model is evaluated on the lab's scan split (as the lab's
   ``sensitivity_scan``). Pruning uses PyTorch's own magnitude mask
   (``torch.nn.utils.prune.L1Unstructured``), not a student's function.
2. Allocation (greedy, by parameter count): each curve is read as an accuracy drop per
   sparsity (linear between scanned points, made non-decreasing); starting from nothing
   pruned, the step of ``--step`` that costs the least predicted drop per weight removed is
   taken, until the size on the course VGG reaches each of ``--targets`` (fraction of the
   dense parameters kept, as ``sparse_model_size_ratio``). Large layers that tolerate
   pruning go first, which is what the parameter-count plot of the lab suggests.
3. Check: the reference ``sparsity_dict`` (the solution notebook's) and each allocation are
   applied to the dense model and fine-tuned with the masks kept (``FineGrainedPruner`` +
   ``fine_tune``, the lab's fine-tuning, ``--epochs`` epochs), and the test accuracy is
   printed before and after. The last line names the smallest size whose accuracy after
   fine-tuning ends within ``--tolerance`` points (default 0.1) of the dense model's.

    .venv/bin/python benchmarks/sparsity_search.py --profile full            # on a GPU
    .venv/bin/python benchmarks/sparsity_search.py --profile full --cpu-bf16 # CPU with bf16
    .venv/bin/python benchmarks/sparsity_search.py --profile smoke           # check, seconds

A run can be done in parts: the scan and each fine-tuned candidate are saved as they finish
in a JSON file under ``--out-dir`` named after the settings (profile, seed, epochs, steps,
scan sparsities, precision, device type and a hash of the dense model's weights). Run the
same command again after an interruption and the finished parts are read back, not
recomputed; any other setting starts a file of its own; ``--report`` prints the tables of
what is saved and fine-tunes nothing. Neither the data nor the code is part of the
settings: after changing the dataset or the fine-tuning code, give another ``--out-dir``.
Under ``full`` on a CPU each candidate fine-tunes 5 whole epochs (on a 2-core Zen 5: about
47 minutes in fp32, 21 to 25 with ``--cpu-bf16``; docs/results.md), so this is how the
search fits sessions.

Every number depends on the checkpoint in ``LAB_DATA`` (``--data``); its training record is
printed. Under ``smoke`` (synthetic data, small VGG) the figures are meaningless.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a fresh clone
sys.path.insert(0, str(Path(__file__).resolve().parent))

REFERENCE_CELL = "lab1_sparsity_dict_solution"


def reference_sparsity_dict() -> dict[str, float]:
    """The ``sparsity_dict`` of Lab 1's solution notebook."""
    from lab_results import solution_namespace

    namespace = solution_namespace("lab1_pruning", [REFERENCE_CELL])  # a literal dict
    return {k: float(v) for k, v in namespace["sparsity_dict"].items()}


def model_fingerprint(model) -> str:
    """sha256 of a model's parameters and buffers (names, shapes, dtypes and values)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def state_path(out_dir: Path, config: dict) -> Path:
    """The file a run with ``config`` keeps its finished parts in."""
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return out_dir / f"{config['profile']}-{key}.json"


def load_state(path: Path, config: dict) -> dict:
    """The finished parts saved at ``path`` for ``config`` (empty if none).

    A file that cannot be read, or that was made with other settings, is an error that
    names it: it is never overwritten silently."""
    if not path.exists():
        return {"config": config, "scan": None, "candidates": []}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(
            f"sparsity_search: cannot read the saved run {path} ({error}); move it away to "
            "start again"
        ) from error
    if state.get("config") != config:
        raise SystemExit(
            f"sparsity_search: {path} holds a run with other settings; move it away to start again"
        )
    return state


def save_state(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` whole or not at all."""
    from autograder.tables import write_text_atomic

    write_text_atomic(path, json.dumps(state, indent=1, sort_keys=True) + "\n")


def finished_candidate(state: dict, allocation: dict[str, float]) -> dict | None:
    """The saved result of fine-tuning ``allocation``, if this run has one."""
    for entry in state["candidates"]:
        if entry["allocation"] == allocation:
            return entry
    return None


def torch_magnitude_prune(weight, sparsity: float):
    """PyTorch's L1 magnitude mask (1 = kept) for ``weight`` at ``sparsity``."""
    import torch
    from torch.nn.utils import prune

    ones = torch.ones_like(weight)
    if sparsity <= 0:
        return ones
    return prune.L1Unstructured(amount=float(sparsity)).compute_mask(weight, default_mask=ones)


def drop_curves(
    sparsities: list[float], accuracies: dict[str, list[float]], dense: float, grid: np.ndarray
) -> dict[str, np.ndarray]:
    """Predicted accuracy drop (points) of each weight at each sparsity of ``grid``."""
    xs = np.array([0.0, *sparsities])
    curves = {}
    for name, row in accuracies.items():
        drop = np.interp(grid, xs, np.array([0.0, *(dense - a for a in row)]))
        curves[name] = np.maximum.accumulate(np.clip(drop, 0.0, None))
    return curves


def greedy_allocations(
    curves: dict[str, np.ndarray], grid: np.ndarray, counts: dict[str, int], targets: list[float]
) -> dict[float, dict[str, float]]:
    """For each target size fraction, the first allocation of the greedy path that meets it.

    ``counts``: parameters per weight; the size counts every parameter of the model
    (``total``), pruned weights keeping ``n - round(n * s)``.
    """
    total = counts["__total__"]
    names = [n for n in curves if n in counts]
    level = dict.fromkeys(names, 0)  # index into grid
    found: dict[float, dict[str, float]] = {}

    def size() -> float:
        removed = sum(round(counts[n] * grid[level[n]]) for n in names)
        return (total - removed) / total

    for target in sorted(targets, reverse=True):
        while size() > target:
            best, best_cost = None, (np.inf, 0.0)
            for n in names:
                i = level[n]
                if i + 1 >= len(grid):
                    continue
                removed = counts[n] * (grid[i + 1] - grid[i])
                # least predicted drop per weight removed; on a tie, the larger step
                cost = ((curves[n][i + 1] - curves[n][i]) / removed, -removed)
                if cost < best_cost:
                    best, best_cost = n, cost
            if best is None:  # every weight at the largest scanned sparsity
                break
            level[best] += 1
        if size() <= target:
            found[target] = {n: round(float(grid[level[n]]), 4) for n in names}
    return found


def main(argv: list[str] | None = None) -> int:
    from helpers.data import seed_argument

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    parser.add_argument("--data", type=Path, default=None, help="LAB_DATA (default: data/)")
    parser.add_argument(
        "--scan-sparsities",
        type=float,
        nargs="+",
        default=[0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95],
    )
    parser.add_argument("--step", type=float, default=0.05, help="sparsity step of the greedy")
    parser.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=[0.25, 0.2, 0.175, 0.15, 0.125, 0.1],
        help="size fractions of the course VGG to allocate for",
    )
    parser.add_argument("--epochs", type=int, default=None, help="default: the profile's")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="default: profile's")
    parser.add_argument("--tolerance", type=float, default=0.1, help="points below dense")
    parser.add_argument("--seed", type=seed_argument, default=0)
    parser.add_argument(
        "--cpu-bf16",
        action="store_true",
        help="on the CPU, scan, fine-tune and evaluate in bf16 autocast (as on a GPU)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=REPO_ROOT / "runs" / "sparsity_search",
        help="where finished parts are saved, and read back by the same command",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="print the tables of the saved parts only: scan and fine-tune nothing",
    )
    args = parser.parse_args(argv)

    if args.data is not None:
        os.environ["LAB_DATA"] = str(args.data.resolve())

    import torch
    from lab_results import checkpoint_line, markdown
    from lab_runtimes import command_line

    from helpers.checkpoints import load_dense_model
    from helpers.data import get_dataloaders
    from helpers.models import VGG
    from helpers.profiles import VGG_ARCH, data_dir, get_device, get_profile
    from helpers.pruning import (
        FineGrainedPruner,
        fine_tune,
        sensitivity_scan,
        sparse_model_size_ratio,
    )
    from helpers.train import cpu_has_bf16, evaluate

    torch.manual_seed(args.seed)
    profile = get_profile(args.profile)
    device = get_device()
    epochs = args.epochs if args.epochs is not None else profile.finetune_epochs
    steps = args.steps_per_epoch or profile.finetune_steps_per_epoch
    loaders = get_dataloaders(profile, device=device, seed=args.seed)
    model = load_dense_model(profile, device=device)
    bf16 = args.cpu_bf16 and device.type == "cpu"
    if args.cpu_bf16 and device.type != "cpu":
        print(f"--cpu-bf16 is for the CPU: ignored on {device.type} (autocast is used there)")
    if bf16 and not cpu_has_bf16():
        print("WARNING: this CPU has no bf16 hardware: --cpu-bf16 will likely be slower")
    began = time.perf_counter()
    print(f"checkpoint: {checkpoint_line(data_dir().resolve(), profile.name)}")
    print(
        f"profile {profile.name}, device {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; fine-tuning {epochs} epoch(s) x "
        f"{steps or 'all'} steps; {'bf16' if bf16 else 'default'} precision"
    )
    config = {
        "profile": profile.name,
        "seed": args.seed,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "scan_sparsities": [float(x) for x in args.scan_sparsities],
        "cpu_bf16": bf16,
        "device": device.type,
        "model_sha256": model_fingerprint(model),
    }
    path = state_path(args.out_dir, config)
    state = load_state(path, config)
    print(f"finished parts saved in {path}")

    if state["scan"] is None and args.report:
        raise SystemExit(
            f"sparsity_search: nothing saved yet for these settings ({path}): run the same "
            "command without --report first"
        )
    if state["scan"] is None:
        scan_began = time.perf_counter()
        dense_accuracy = evaluate(model, loaders["test"], verbose=False, cpu_bf16=bf16)
        scan_dense = evaluate(model, loaders["scan"], verbose=False, cpu_bf16=bf16)
        sparsities, accuracies = sensitivity_scan(
            model,
            loaders["scan"],
            torch_magnitude_prune,
            args.scan_sparsities,
            verbose=True,
            cpu_bf16=bf16,
        )
        state["scan"] = {
            "dense_test": dense_accuracy,
            "dense_scan": scan_dense,
            "sparsities": sparsities,
            "accuracies": accuracies,
            "wall_s": time.perf_counter() - scan_began,
        }
        save_state(path, state)
    else:
        print(f"sensitivity scan read back from {path} ({state['scan']['wall_s']:.0f} s then)")
    dense_accuracy = state["scan"]["dense_test"]
    scan_dense = state["scan"]["dense_scan"]
    sparsities = state["scan"]["sparsities"]
    accuracies = state["scan"]["accuracies"]
    print(f"\n## Sensitivity (scan split, dense {scan_dense:.2f}%)\n")
    print(
        markdown(
            [
                {"weight": n, **{f"{s:.2f}": a for s, a in zip(sparsities, row, strict=True)}}
                for n, row in accuracies.items()
            ]
        )
    )

    with torch.device("meta"):  # the course VGG's parameter counts, no memory
        course_vgg = VGG(VGG_ARCH)
    counts = {n: p.numel() for n, p in course_vgg.named_parameters() if n in accuracies}
    counts["__total__"] = sum(p.numel() for p in course_vgg.parameters())
    grid = np.round(np.arange(0.0, max(sparsities) + 1e-9, args.step), 4)
    curves = drop_curves(sparsities, accuracies, scan_dense, grid)
    candidates = {"reference (solution)": reference_sparsity_dict()}
    for target, allocation in greedy_allocations(curves, grid, counts, args.targets).items():
        candidates[f"greedy <= {target:.1%}"] = allocation

    print("\n## Allocations (sparsity per weight)\n")
    names = list(accuracies)
    print(
        markdown(
            [{"weight": n, **{c: d.get(n, 0.0) for c, d in candidates.items()}} for n in names]
        )
    )

    rows = []
    for label, allocation in candidates.items():
        size = 100 * sparse_model_size_ratio(course_vgg, allocation)
        predicted = sum(float(np.interp(s, grid, curves[n])) for n, s in allocation.items())
        entry = finished_candidate(state, allocation)
        reused = "" if entry is None else " (read back)"
        if entry is None and not args.report:
            print(f"\n{label}: {size:.1f}% of the dense size, fine-tuning", flush=True)
            candidate_began = time.perf_counter()
            # Every candidate sees the same batches and augmentation (the loader's epochs
            # from 0): differences between candidates are not data order, and a candidate
            # read back equals one fine-tuned in this process, whatever ran before it.
            torch.manual_seed(args.seed)
            loaders["train"].epoch = 0
            sparse = copy.deepcopy(model)
            pruner = FineGrainedPruner(sparse, allocation, torch_magnitude_prune)
            before = evaluate(sparse, loaders["test"], verbose=False, cpu_bf16=bf16)
            history = fine_tune(
                sparse,
                loaders["train"],
                loaders["test"],
                num_epochs=epochs,
                steps_per_epoch=steps,
                callbacks=[lambda sparse=sparse, pruner=pruner: pruner.apply(sparse)],
                verbose=True,
                cpu_bf16=bf16,
            )
            entry = {
                "allocation": allocation,
                "pruned": before,
                "history": history,
                "wall_s": time.perf_counter() - candidate_began,
            }
            state["candidates"].append(entry)
            save_state(path, state)
        row = {"allocation": label, "size, course VGG (%)": size}
        row["predicted drop (points)"] = predicted
        if entry is None:  # --report, and not fine-tuned yet
            row["pruned (%)"] = row["fine-tuned (%)"] = "not run"
            row["vs dense (points)"] = row["per epoch (%)"] = row["wall s"] = ""
        else:
            final = entry["history"][-1]
            row["pruned (%)"] = entry["pruned"]
            row["fine-tuned (%)"] = final
            row["vs dense (points)"] = final - dense_accuracy
            row["per epoch (%)"] = " / ".join(f"{a:.2f}" for a in entry["history"])
            row["wall s"] = f"{entry['wall_s']:.0f}{reused}"
            print(f"  {label}: {size:.1f}% -> {final:.2f}%{reused}", flush=True)
        rows.append(row)

    print(f"\n## Fine-tuned with the masks kept (test split, dense {dense_accuracy:.2f}%)\n")
    print(markdown(rows))
    done = [r for r in rows if r["fine-tuned (%)"] != "not run"]
    if len(done) < len(rows):
        print(
            f"\n{len(rows) - len(done)} allocation(s) not fine-tuned yet: the same command "
            "without --report fine-tunes them, reading the rest back"
        )
    good = [r for r in done if r["fine-tuned (%)"] >= dense_accuracy - args.tolerance]
    if good:
        best = min(good, key=lambda r: r["size, course VGG (%)"])
        print(
            f"\nsmallest size within {args.tolerance} points of dense after {epochs} epoch(s)"
            f"{' among those fine-tuned' if len(done) < len(rows) else ''}: "
            f"{best['size, course VGG (%)']:.1f}% of the dense size ({best['allocation']}, "
            f"{best['fine-tuned (%)']:.2f}% against {dense_accuracy:.2f}%)"
        )
    else:
        print(
            f"\nno allocation{' fine-tuned so far' if len(done) < len(rows) else ''} ended "
            f"within {args.tolerance} points of dense ({dense_accuracy:.2f}%)"
        )
    print(
        f"wall time of this command {time.perf_counter() - began:.0f} s (a part read back: its "
        "own time is its 'wall s')"
    )
    print(f"Command: {command_line(__file__, argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
