"""CPU latency, size and accuracy of the course VGG in fp32 and int8, as Lab 3 makes them.

Models, all on the CPU with ``--threads`` torch threads:

- ``fp32``: the dense VGG, eager (what Lab 3 compares against);
- ``int8 (FX)``: Lab 3's recipe: ``prepare_fx`` with one global qconfig (per-tensor MinMax
  observers, quint8 activations in [0, 127], symmetric qint8 weights), calibration on
  training images, ``convert_fx``, on the ``x86`` engine (fbgemm/oneDNN kernels);
- ``int8 (PT2E, compiled)``: torchao's PT2E flow (``torch.export`` with a dynamic batch,
  ``X86InductorQuantizer``'s default config with 7-bit activations (``reduce_range=True``),
  ``prepare_pt2e``, calibration, ``convert_pt2e``)
  lowered by ``torch.compile`` with Inductor freezing, as Lab 3 does it; only when torchao
  imports (``helpers.quant.torchao_status``);
- ``fp32 (compiled)``: the same ``torch.compile`` with freezing on the fp32 model, so that the
  PT2E ratio can be read against a compiled baseline as well as the eager one.

Weights: the dense checkpoint (``LAB_DATA/vgg.cifar.pretrained.pth`` or ``--checkpoint``) when
it exists and is not a stand-in, else ``helpers.pruning.random_vgg`` (random weights with
non-trivial BatchNorm state); the output says which. Latency does not depend on the weight
values, accuracy does: it is printed only for a real checkpoint and the CIFAR-10 cache
(``--eval-images`` class-balanced test images). Calibration uses training images from the
cache, else uniform random images (labelled).

Latency: ``helpers.quant.latency_by_batch`` (``helpers.latency.compare_latency`` per batch
size): the models are timed in turns on the same input, so each speed-up is a ratio of two
medians measured in the same run. Batch 1 uses ``--calls`` timed calls per model, larger
batches ``max(3, calls // 4)``. Prints a Markdown table and the command that made it.

    .venv/bin/python benchmarks/quant_latency.py                        # about 5-10 min on 2 cores
    .venv/bin/python benchmarks/quant_latency.py --calls 8 --no-compile --arch small   # a check
    .venv/bin/python benchmarks/quant_latency.py --op-profile          # where int8 spends its time
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a fresh clone

from helpers.checkpoints import DENSE_CHECKPOINT, load_checkpoint  # noqa: E402
from helpers.data import CACHE_NAME, get_dataloaders  # noqa: E402
from helpers.latency import LatencyResult  # noqa: E402
from helpers.metrics import get_model_macs  # noqa: E402
from helpers.models import VGG  # noqa: E402
from helpers.profiles import SMALL_VGG_ARCH, VGG_ARCH, data_dir, get_profile  # noqa: E402
from helpers.pruning import random_vgg  # noqa: E402
from helpers.quant import (  # noqa: E402
    cpu_capability,
    graph_state_dict,
    latency_by_batch,
    pt2e_quantize_steps,
    quantization_warnings_silenced,
    select_quantized_engine,
    state_dict_bytes,
    torchao_status,
)
from helpers.train import evaluate  # noqa: E402

FP32, FX, PT2E, FP32_COMPILED = "fp32", "int8 (FX)", "int8 (PT2E, compiled)", "fp32 (compiled)"
PT2E_CONVERTED = "int8 (PT2E, as converted)"  # accuracy only: the fp32 simulation of int8


# ----------------------------------------------------------------------------- models


def load_weights(arch: tuple, checkpoint: Path | None) -> tuple[VGG, str, bool]:
    """The fp32 VGG on the CPU in eval mode, a label for its weights, and whether they are
    trained (so that accuracy means something)."""
    if arch == VGG_ARCH and checkpoint is not None and checkpoint.is_file():
        model = VGG(arch)
        meta = load_checkpoint(model, checkpoint)
        if meta.get("stand_in"):
            return model.eval(), f"stand-in weights from {checkpoint} (not trained)", False
        return model.eval(), f"checkpoint {checkpoint}", True
    why = "--arch small" if arch != VGG_ARCH else f"no checkpoint at {checkpoint}"
    return random_vgg(arch, seed=0), f"random weights (helpers.pruning.random_vgg; {why})", False


def lab3_qconfig():
    """Lab 3's qconfig: per-tensor MinMax, quint8 activations in [0, 127], symmetric qint8
    weights (the x86 backend's 7-bit activation range)."""
    from torch.ao.quantization import MinMaxObserver, QConfig

    activation = MinMaxObserver.with_args(
        dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=0, quant_max=127
    )
    weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    return QConfig(activation=activation, weight=weight)


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Run the calibration batches through a prepared model (eval mode, no gradients)."""
    model.eval()
    for inputs in batches:
        model(inputs)


def quantize_fx(model: nn.Module, calib: list[torch.Tensor]) -> torch.fx.GraphModule:
    """Lab 3's FX post-training static quantization of a copy of ``model``."""
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with quantization_warnings_silenced():
        prepared = prepare_fx(
            copy.deepcopy(model).eval(),
            QConfigMapping().set_global(lab3_qconfig()),
            example_inputs=(calib[0][:1],),
        )
        calibrate(prepared, calib)
        return convert_fx(prepared)


def quantize_pt2e(
    model: nn.Module, calib: list[torch.Tensor], reduce_range: bool = True
) -> torch.fx.GraphModule:
    """Lab 3's PT2E quantization (torchao, x86 Inductor quantizer) with a dynamic batch;
    ``reduce_range``: 7-bit activations, as Lab 3 asks (False: the quantizer's default, 8)."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = calib[0][:8]
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(
        copy.deepcopy(model).eval(), (example,), strict=True, dynamic_shapes={"x": {0: batch}}
    ).module()
    quantizer = xiq.X86InductorQuantizer().set_global(
        xiq.get_default_x86_inductor_quantization_config(reduce_range=reduce_range)
    )
    prepared = prepare_pt2e(exported, quantizer)
    allow_exported_model_train_eval(prepared)
    calibrate(prepared, calib)
    converted = convert_pt2e(prepared)
    pt2e_quantize_steps(converted)  # raises if the quantizer matched nothing
    allow_exported_model_train_eval(converted)
    return converted


def compile_frozen(model: nn.Module, batch_sizes: list[int]) -> tuple[nn.Module, float]:
    """``torch.compile`` with Inductor freezing (as Lab 3), warmed at each batch size; returns
    the compiled module and the seconds compilation took."""
    import torch._inductor.config as inductor_config

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    inductor_config.freezing = True
    start = time.perf_counter()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="To copy construct from a tensor")
        compiled = torch.compile(model)
        for batch_size in batch_sizes:
            compiled(torch.zeros(batch_size, 3, 32, 32))
    return compiled, time.perf_counter() - start


# ----------------------------------------------------------------------------- data


def cifar_loaders(cache_dir: Path, eval_images: int, calib_images: int, batch: int):
    """Calibration and test loaders on the CPU from the CIFAR-10 cache, or None without it."""
    if not (cache_dir / CACHE_NAME).is_file():
        return None
    profile = dataclasses.replace(
        get_profile("full"),
        batch_size=batch,
        eval_batch_size=256,
        test_subset=eval_images if eval_images < 10000 else None,
        calib_batches=max(1, calib_images // batch),
    )
    return get_dataloaders(profile, device="cpu", seed=0)


# ----------------------------------------------------------------------------- reporting


def machine_line(threads: int) -> str:
    """The CPU, its ISA as PyTorch sees it, threads, load, torch version."""
    model_name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as file:
            model_name = next(
                line.split(":", 1)[1].strip() for line in file if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return (
        f"CPU: {model_name}, {os.cpu_count()} logical CPUs, ISA {cpu_capability()}; "
        f"torch {torch.__version__}, {threads} threads; quantized engine "
        f"{torch.backends.quantized.engine}; load average {os.getloadavg()[0]:.2f}"
    )


def op_profile(models: dict[str, nn.Module], batch_size: int, threads: int, top: int) -> None:
    """Print the ``top`` operators by self CPU time of one forward pass of each model."""
    from torch.profiler import ProfilerActivity, profile

    inputs = torch.zeros(batch_size, 3, 32, 32)
    torch.set_num_threads(threads)
    for name, model in models.items():
        with torch.inference_mode():
            model(inputs)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    model(inputs)
        print(f"\n### operators of {name}, batch {batch_size}, 3 calls ({threads} threads)\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def fmt(result: LatencyResult) -> str:
    return f"{result.median_ms:.2f} ({result.q1_ms:.2f}-{result.q3_ms:.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument(
        "--calls", type=int, default=100, help="timed calls at batch 1; max(3, calls//4) above"
    )
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls at batch 1")
    parser.add_argument("--data", type=Path, default=None, help="LAB_DATA folder (default data/)")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="default: DATA/" + DENSE_CHECKPOINT
    )
    parser.add_argument(
        "--eval-images", type=int, default=10000, help="class-balanced test images for accuracy"
    )
    parser.add_argument(
        "--calib-images", type=int, default=512, help="training images (calibration)"
    )
    parser.add_argument("--arch", choices=["course", "small"], default="course")
    parser.add_argument("--no-compile", action="store_true", help="skip PT2E and fp32 (compiled)")
    parser.add_argument(
        "--op-profile",
        action="store_true",
        help="also print the top operators at the largest batch",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    select_quantized_engine()
    arch = VGG_ARCH if args.arch == "course" else SMALL_VGG_ARCH
    root = (args.data or data_dir()).resolve()
    os.environ["LAB_DATA"] = str(root)  # the loaders read the cache from LAB_DATA
    checkpoint = args.checkpoint or root / DENSE_CHECKPOINT
    command = "python benchmarks/quant_latency.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )

    fp32, weights_label, trained = load_weights(arch, checkpoint)
    calib_batch = 64
    loaders = cifar_loaders(root, args.eval_images, args.calib_images, calib_batch)
    if loaders is not None:
        calib = [inputs for inputs, _ in loaders["calib"]]
        data_label = f"CIFAR-10 (JPEG copy) cache {root / CACHE_NAME}"
    else:
        generator = torch.Generator().manual_seed(0)
        calib = [
            torch.rand(calib_batch, 3, 32, 32, generator=generator)
            for _ in range(max(1, args.calib_images // calib_batch))
        ]
        data_label = f"no cache at {root / CACHE_NAME}: uniform random images"
    calib_count = sum(len(batch) for batch in calib)

    print(machine_line(args.threads))
    print(f"weights: {weights_label}")
    print(f"calibration: {calib_count} images, {data_label}")
    macs = get_model_macs(fp32, torch.zeros(1, 3, 32, 32))
    print(f"model: VGG {arch}, {macs / 1e6:.0f} M MACs per image")

    start = time.perf_counter()
    models: dict[str, nn.Module] = {FP32: fp32, FX: quantize_fx(fp32, calib)}
    print(f"FX int8 made in {time.perf_counter() - start:.1f} s")
    sizes = {FP32: state_dict_bytes(fp32), FX: state_dict_bytes(models[FX])}

    pt2e_note = ""
    pt2e: nn.Module | None = None  # as converted (fp32 arithmetic with int8 rounding)
    status = torchao_status()
    if args.no_compile:
        pt2e_note = "PT2E and compiled fp32 skipped (--no-compile)"
    elif not status.available:
        pt2e_note = status.message
    else:
        with quantization_warnings_silenced(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            pt2e = quantize_pt2e(fp32, calib)
            print(
                f"PT2E int8 made in {time.perf_counter() - start:.1f} s (torchao {status.version})"
            )
            sizes[PT2E] = state_dict_bytes(graph_state_dict(pt2e))
            models[PT2E], seconds = compile_frozen(pt2e, args.batch_sizes)
            print(f"PT2E int8 compiled for batches {args.batch_sizes} in {seconds:.0f} s")
            models[FP32_COMPILED], seconds = compile_frozen(copy.deepcopy(fp32), args.batch_sizes)
            print(f"fp32 compiled for batches {args.batch_sizes} in {seconds:.0f} s")
        sizes[FP32_COMPILED] = sizes[FP32]

    accuracy: dict[str, float] = {}
    if trained and loaders is not None:
        evaluated = {FP32: fp32, FX: models[FX], PT2E: models.get(PT2E), PT2E_CONVERTED: pt2e}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="To copy construct from a tensor")
            for name, net in evaluated.items():
                if net is not None:
                    accuracy[name] = evaluate(net, loaders["test"], verbose=False)
        eval_label = f"{loaders['test'].num_samples} test images, CIFAR-10 (JPEG copy)"
    else:
        eval_label = "not measured: " + (
            "no trained checkpoint" if not trained else f"no cache at {root / CACHE_NAME}"
        )

    print(f"\ntiming {list(models)} in turns at batches {args.batch_sizes} ...")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="To copy construct from a tensor")
        latency = latency_by_batch(
            models,
            args.batch_sizes,
            num_threads=args.threads,
            n_warmup=args.warmup,
            n_test=args.calls,
        )

    rows = []
    header = ["model", "accuracy (%)", "state dict (MiB)"]
    for b in args.batch_sizes:
        header += [f"batch {b}: ms (IQR)", f"batch {b}: speed-up vs fp32"]
    for name in models:
        row = [
            name,
            f"{accuracy[name]:.2f}" if name in accuracy else "n/a",
            f"{sizes[name] / 2**20:.2f}",
        ]
        for b in args.batch_sizes:
            ratio = latency[FP32][b].median_ms / latency[name][b].median_ms
            row += [fmt(latency[name][b]), f"{ratio:.2f}x"]
        rows.append(row)
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    calls = {b: (args.calls if b == 1 else max(3, args.calls // 4)) for b in args.batch_sizes}
    print(
        f"Latency: median (IQR) ms per call over {calls} timed calls per batch size, models "
        f"timed in turns; {args.threads} threads; speed-ups are ratios of medians of the same run."
    )
    print(
        f"Accuracy: {eval_label}; PT2E's is the compiled model's (the int8 kernels), as in Lab 3."
        f" Weights: {weights_label}."
    )
    for name in models:
        rates = ", ".join(
            f"batch {b}: {macs * b / latency[name][b].median_ms / 1e6:.1f}"
            for b in args.batch_sizes
        )
        print(
            f"Throughput of {name}, G MAC/s at the median ({macs / 1e6:.0f} M MACs per image): {rates}"
        )
    if FX in accuracy:
        print(f"int8 (FX) accuracy change: {accuracy[FX] - accuracy[FP32]:+.2f} points")
    if PT2E_CONVERTED in accuracy:
        print(
            f"int8 (PT2E) accuracy: {accuracy[PT2E]:.2f}% compiled, "
            f"{accuracy[PT2E_CONVERTED]:.2f}% as converted (uncompiled)"
        )
    if pt2e_note:
        print(f"Note: {pt2e_note}")
    print(machine_line(args.threads))
    print(f"Command: {command}")

    if args.op_profile:
        profiled = {name: models[name] for name in (FP32, FX) if name in models}
        op_profile(profiled, max(args.batch_sizes), args.threads, top=12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
