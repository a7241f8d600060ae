"""Throughput of helpers.data.DeviceLoader versus a torchvision DataLoader on the same images.

Two measurements, each the median of ``--repeats`` timed passes after one warm-up pass:

1. evaluation: the dense VGG (``helpers.models.VGG``, random weights: only speed matters)
   over ``--images`` test images, images/s, through each loader;
2. data pipeline alone: one training-style epoch (shuffle, random crop with padding 4,
   horizontal flip) over ``--images`` training images, no model, through each loader.

Both loaders read the prepared cache (``python -m helpers data ...``); the torchvision path is
``cifar10_torchvision_dataset`` (PIL image -> RandomCrop -> RandomHorizontalFlip -> ToTensor)
in a ``torch.utils.data.DataLoader``, the MIT lab's pipeline. As a check, both evaluation
passes must predict the same classes (same input values, same model).

    python benchmarks/loader_throughput.py --images 500 --pipeline-images 10000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from helpers.data import DeviceLoader, cifar10_torchvision_dataset, load_cifar10
from helpers.latency import time_in_turns
from helpers.models import VGG
from helpers.profiles import get_device


def time_alternating(
    runs: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Wall times in seconds of ``repeats`` calls of each run, timed in turns
    (``helpers.latency.time_in_turns``: each round starts with the next run) so that a change
    in machine load or an order effect hits them alike, after one untimed warm-up call each
    (whose results are returned)."""
    warm = {name: run() for name, run in runs.items()}
    samples_ms = time_in_turns(runs, repeats, dict.fromkeys(runs, device))
    return {name: [ms / 1e3 for ms in samples] for name, samples in samples_ms.items()}, warm


def _predict(model: torch.nn.Module, loader: Iterable, device: torch.device) -> torch.Tensor:
    """Predicted classes over the whole loader."""
    predictions = []
    with torch.inference_mode():
        for inputs, _ in loader:
            inputs = inputs.to(device, non_blocking=True)
            predictions.append(model(inputs).argmax(1))
    return torch.cat(predictions).cpu()


def _consume(loader: Iterable, device: torch.device) -> float:
    """Iterate one epoch, moving each batch to the device and touching it."""
    total = torch.zeros((), device=device)
    for inputs, targets in loader:
        inputs = inputs.to(device, non_blocking=True)
        total += inputs[:, :, 0, 0].sum() + targets.to(device).sum()
    return float(total)


def _report(name: str, times: list[float], images: int) -> float:
    median = statistics.median(times)
    spread = f"{min(times):.3f}-{max(times):.3f}"
    print(f"  {name:<34} {median:8.3f} s  ({spread})  {images / median:10.0f} images/s")
    return median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500, help="test images per evaluation")
    parser.add_argument(
        "--pipeline-images", type=int, default=10000, help="training images per pipeline epoch"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed passes (median reported)")
    parser.add_argument("--root", type=Path, default=None, help="data folder (LAB_DATA or data/)")
    parser.add_argument("--batch-size", type=int, default=512, help="evaluation batch")
    parser.add_argument("--train-batch-size", type=int, default=128, help="pipeline batch")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader num_workers")
    parser.add_argument("--device", default=None, help="default: helpers.profiles.get_device()")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = get_device(args.device)
    data = load_cifar10(args.root)
    n = min(args.images, len(data["test_labels"]))
    m = min(args.pipeline_images, len(data["train_labels"]))
    pin = device.type == "cuda"
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"median of {args.repeats} interleaved passes; DataLoader num_workers={args.workers}"
    )
    print(f"data: {data['source']}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    model = VGG().to(device).eval()

    # 1. evaluation throughput
    test_index = torch.arange(n)
    device_test = DeviceLoader(
        data["test_images"][test_index],
        data["test_labels"][test_index],
        args.batch_size,
        device=device,
    )
    tv_test = torch.utils.data.DataLoader(
        torch.utils.data.Subset(cifar10_torchvision_dataset("test", args.root), range(n)),
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=pin,
    )
    times, warm = time_alternating(
        {
            "DeviceLoader": lambda: _predict(model, device_test, device),
            "torchvision DataLoader": lambda: _predict(model, tv_test, device),
        },
        args.repeats,
        device,
    )
    same = torch.equal(warm["DeviceLoader"], warm["torchvision DataLoader"])
    print(
        f"\nevaluation of {n} test images, dense VGG, batch {args.batch_size} "
        f"(same predictions: {same})"
    )
    fast = _report("DeviceLoader", times["DeviceLoader"], n)
    slow = _report("torchvision DataLoader", times["torchvision DataLoader"], n)
    print(f"  DeviceLoader speed-up: {slow / fast:.2f}x")

    # 2. data pipeline alone, training-style (shuffle + crop + flip)
    device_train = DeviceLoader(
        data["train_images"][:m],
        data["train_labels"][:m],
        args.train_batch_size,
        shuffle=True,
        augment=True,
        device=device,
    )
    tv_train = torch.utils.data.DataLoader(
        torch.utils.data.Subset(cifar10_torchvision_dataset("train", args.root), range(m)),
        batch_size=args.train_batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=pin,
    )
    times, _ = time_alternating(
        {
            "device": lambda: _consume(device_train, device),
            "torchvision": lambda: _consume(tv_train, device),
        },
        args.repeats,
        device,
    )
    print(f"\ndata pipeline only, one augmented epoch of {m} images, batch {args.train_batch_size}")
    fast = _report("DeviceLoader (crop+flip on device)", times["device"], m)
    slow = _report("torchvision DataLoader (PIL)", times["torchvision"], m)
    print(f"  DeviceLoader speed-up: {slow / fast:.1f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
