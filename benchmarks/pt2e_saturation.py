"""Does the compiled PT2E int8 model compute what ``convert_pt2e`` promises, with 8-bit and
with 7-bit activations?

``convert_pt2e`` returns a model that *simulates* int8 in fp32 (quantize/dequantize steps
around fp32 ops); ``torch.compile`` (Inductor, freezing on) lowers it to oneDNN's int8
kernels. On CPUs without VNNI those kernels multiply uint8 activations by int8 weights with an
instruction that adds pairs of products into 16 bits, which saturates when activations use the
full range [0, 255] (Lab 3, section 2.1). The simulation never saturates, so the gap between
the two is the saturation. For each activation range (``reduce_range`` off: the quantizer's
default, 8 bits; on: 7 bits, Lab 3's choice) this script quantizes a model with Lab 3's PT2E
recipe (``benchmarks/quant_latency.quantize_pt2e``), compiles it, runs both on the same
images and prints the largest logit difference relative to the largest logit, and how often
the two predict the same class.

Models: the course VGG (the checkpoint when one exists, else random weights, as
``quant_latency.py``) on uniform random images or the CIFAR-10 cache, and ``adversarial``: a
two-conv model whose second conv has only positive weights, so that adjacent products add up
to the most (the case saturation hits first).

    .venv/bin/python benchmarks/pt2e_saturation.py        # about 2 min on 2 cores
    .venv/bin/python benchmarks/pt2e_saturation.py --models adversarial   # about 30 s
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a fresh clone

from benchmarks.quant_latency import (  # noqa: E402
    cifar_loaders,
    compile_frozen,
    load_weights,
    machine_line,
    quantize_pt2e,
)
from helpers.checkpoints import DENSE_CHECKPOINT  # noqa: E402
from helpers.profiles import VGG_ARCH, data_dir  # noqa: E402
from helpers.quant import cpu_has_vnni, quantization_warnings_silenced, torchao_status  # noqa: E402


class Adversarial(nn.Module):
    """conv -> ReLU -> conv (all weights positive) -> ReLU -> mean -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 64, 3, padding=1)
        self.conv1 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64, 10)
        with torch.no_grad():
            self.conv0.weight.abs_()
            self.conv0.bias.fill_(0.1)
            self.conv1.weight.uniform_(0.005, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 32, 32) -> (N, 10)
        x = torch.relu(self.conv1(torch.relu(self.conv0(x))))
        return self.fc(x.mean(dim=(2, 3)))


@torch.inference_mode()
def gap(model: nn.Module, calib: list[torch.Tensor], inputs: torch.Tensor, reduce_range: bool):
    """(largest |compiled - simulated| logit over the largest |simulated| logit, share of
    images whose top-1 class agrees, compile seconds) for ``model`` quantized by Lab 3's PT2E
    recipe with the given activation range."""
    with quantization_warnings_silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulated = quantize_pt2e(model, calib, reduce_range=reduce_range)
        expected = simulated(inputs)
        compiled, seconds = compile_frozen(simulated, [inputs.shape[0]])
        got = compiled(inputs)
    relative = float((got - expected).abs().max() / expected.abs().max())
    agree = float((got.argmax(1) == expected.argmax(1)).float().mean())
    torch._dynamo.reset()  # the next model compiles afresh
    return relative, agree, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", choices=["course", "adversarial"], default=["course", "adversarial"]
    )
    parser.add_argument("--images", type=int, default=256, help="images compared per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None, help="LAB_DATA folder (default data/)")
    args = parser.parse_args(argv)
    status = torchao_status()
    if not status.available:
        print(status.message)
        return 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    root = (args.data or data_dir()).resolve()
    os.environ["LAB_DATA"] = str(root)  # the loaders read the cache from LAB_DATA
    generator = torch.Generator().manual_seed(0)
    loaders = cifar_loaders(root, args.images, 256, 64)
    if loaders is not None:
        calib = [inputs for inputs, _ in loaders["calib"]]
        inputs = torch.cat([batch for batch, _ in loaders["test"]])[: args.images]
        data_label = (
            "CIFAR-10 (JPEG copy): 256 training images to calibrate, test images to compare"
        )
    else:
        calib = [torch.rand(64, 3, 32, 32, generator=generator) for _ in range(4)]
        inputs = torch.rand(args.images, 3, 32, 32, generator=generator)
        data_label = "uniform random images (no CIFAR-10 cache)"

    print(machine_line(args.threads))
    print(f"VNNI (helpers.quant.cpu_has_vnni): {cpu_has_vnni()}; torchao {status.version}")
    print(f"data: {data_label}")
    rows = []
    for name in args.models:
        if name == "course":
            model, weights, trained = load_weights(VGG_ARCH, root / DENSE_CHECKPOINT)
            print(f"course VGG: {weights}")
            label = "course VGG, " + ("trained" if trained else "random weights")
        else:
            torch.manual_seed(0)
            model, label = Adversarial().eval(), "adversarial (positive conv weights)"
        for reduce_range in (False, True):
            start = time.perf_counter()
            relative, agree, seconds = gap(model, calib, inputs, reduce_range)
            bits = "7 bits (reduce_range)" if reduce_range else "8 bits (default)"
            rows.append((label, bits, relative, agree))
            print(
                f"{label}, {bits}: done in {time.perf_counter() - start:.0f} s "
                f"(compile {seconds:.0f} s)"
            )

    print("\n| model | activations | max logit gap, compiled vs simulated | same top-1 |")
    print("|---|---|---|---|")
    for label, bits, relative, agree in rows:
        print(f"| {label} | {bits} | {relative:.2%} | {agree:.1%} |")
    print(
        f"\n{len(inputs)} images per model. Command: python benchmarks/pt2e_saturation.py "
        + shlex.join(sys.argv[1:] if argv is None else argv)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
