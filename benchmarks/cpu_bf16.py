"""Training and evaluation speed of the dense VGG on the CPU in fp32 against ``--cpu-bf16``.

``python -m helpers train-dense --cpu-bf16`` (``helpers.train.train`` and ``evaluate`` with
``cpu_bf16=True``) autocasts to bf16 with channels_last inputs on the CPU, as the labs do on a
GPU with bf16. This script times the two code paths on this CPU, each in turns with the other
(``helpers.latency.time_in_turns``) so that a change in machine load hits both alike:

1. a training step (``train(..., max_steps=1)``: forward, backward, SGD step) at the course
   recipe's batch of 512;
2. evaluation (``evaluate``) of ``--eval-images`` images.

Each mode trains its own copy of the same random initial weights, on random CIFAR-shaped
images (speed does not depend on the values). It prints the medians, images per second and
the speed-up of bf16, with the CPU, threads and PyTorch version. Whether bf16 costs accuracy
is a question for a training run (docs/results.md, section 1), not for this script.

    python benchmarks/cpu_bf16.py                      # about 3 minutes on 2 cores
    python benchmarks/cpu_bf16.py --arch small --batch-size 32 --repeats 2 --eval-images 64
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch
from torch import nn

from helpers.data import DeviceLoader, make_synthetic
from helpers.latency import summarize, time_in_turns
from helpers.models import VGG
from helpers.profiles import SMALL_VGG_ARCH
from helpers.train import cpu_has_bf16, evaluate, train

MODES = {"fp32": False, "bf16 (--cpu-bf16)": True}


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, or what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=["course", "small"], default="course")
    parser.add_argument("--batch-size", type=int, default=512, help="training batch (course: 512)")
    parser.add_argument("--eval-images", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per mode")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = make_synthetic(args.batch_size, args.eval_images, seed=0)
    train_loader = DeviceLoader(
        data["train_images"],
        data["train_labels"],
        args.batch_size,
        shuffle=True,
        augment=True,
        device="cpu",
    )
    test_loader = DeviceLoader(data["test_images"], data["test_labels"], 256, device="cpu")
    models, optimizers = {}, {}
    for name in MODES:
        torch.manual_seed(0)
        models[name] = VGG() if args.arch == "course" else VGG(SMALL_VGG_ARCH)
        optimizers[name] = torch.optim.SGD(models[name].parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    device = torch.device("cpu")

    print(
        f"CPU: {cpu_name()} ({os.cpu_count()} CPUs), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, kernels {torch.backends.cpu.get_cpu_capability()}, "
        f"bf16 in hardware: {cpu_has_bf16()}; load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"VGG ({args.arch}), random weights; median (IQR) of {args.repeats} calls per mode, "
        "in turns (each round starting with the other mode)"
    )

    def step(name: str):
        return lambda: train(
            models[name],
            train_loader,
            criterion,
            optimizers[name],
            max_steps=1,
            verbose=False,
            cpu_bf16=MODES[name],
        )

    def score(name: str):
        return lambda: evaluate(models[name], test_loader, verbose=False, cpu_bf16=MODES[name])

    rows = []
    for what, make, images in (
        (f"training step, batch {args.batch_size}", step, args.batch_size),
        (f"evaluation, {args.eval_images} images (batch 256)", score, args.eval_images),
    ):
        calls = {name: make(name) for name in MODES}
        for call in calls.values():  # one untimed warm-up call each
            call()
        samples = time_in_turns(calls, args.repeats, dict.fromkeys(calls, device))
        stats = {name: summarize(samples[name], device, args.threads) for name in MODES}
        rows.append((what, stats, images))
    print(
        "\n| what | fp32: s (IQR) | fp32: images/s | bf16: s (IQR) | bf16: images/s "
        "| bf16 speed-up |\n|---|---|---|---|---|---|"
    )
    for what, stats, images in rows:
        cells = " | ".join(
            f"{r.median_ms / 1e3:.4g} ({r.q1_ms / 1e3:.4g}-{r.q3_ms / 1e3:.4g}) | "
            f"{images / (r.median_ms / 1e3):.0f}"
            for r in stats.values()
        )
        fp32, bf16 = (r.median_ms for r in stats.values())
        print(f"| {what} | {cells} | {fp32 / bf16:.2f}x |")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
