"""The one training loop and the one evaluation of the labs, and the dense-VGG recipe.

``train`` and ``evaluate`` keep the MIT 6.5940 signatures. Both take the device from the
model's parameters and move each batch there, so they work with a ``helpers.data.DeviceLoader``
(batches already on the device) and with a plain ``torch.utils.data.DataLoader`` alike.
On CUDA they use autocast and channels_last inputs; on the CPU they run in plain fp32 unless
``cpu_bf16=True`` asks for the same there (bf16 autocast, channels_last inputs).
Autocast uses bf16 on GPUs that have it in hardware (compute capability 8.0 and up: A100,
H100, RTX 30xx and later) and fp16 with loss scaling on older ones (Colab's T4, V100), where
cuDNN has no bf16 convolutions (``autocast_dtype``).

``train_dense`` is the course recipe for the dense VGG (SGD, lr 0.4, momentum 0.9, weight decay
5e-4, batch 512, 20 epochs, a triangular one-cycle learning rate stepped every batch). It is
resumable after an interruption and is also the command ``python -m helpers train-dense``.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from helpers.checkpoints import (
    DENSE_CHECKPOINT,
    CheckpointError,
    read_checkpoint,
    save_atomic,
    save_checkpoint,
)
from helpers.models import VGG
from helpers.profiles import Profile, data_dir, get_device, get_profile, module_device, set_eval

_INTEGER_DTYPES = {torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64}


def _holds_integer_weights(model: nn.Module) -> bool:
    """Whether the model keeps integer weights (a quantized model), which autocast would round."""
    return any(
        tensor.dtype in _INTEGER_DTYPES and not name.endswith("num_batches_tracked")
        for name, tensor in model.state_dict().items()
    )


def _move(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``, copied asynchronously only towards an accelerator: a copy to
    the CPU made with ``non_blocking=True`` can be read before it has landed (PyTorch's guide
    to ``non_blocking`` and ``pin_memory``), as when a CPU model (int8) is evaluated on batches
    that live on the GPU."""
    return tensor.to(device, non_blocking=device.type != "cpu")


def _to_device(
    inputs: torch.Tensor, device: torch.device, channels_last: bool = False
) -> torch.Tensor:
    inputs = _move(inputs, device)
    if (channels_last or device.type == "cuda") and inputs.dim() == 4:
        # channels_last inputs make cuDNN (oneDNN on the CPU) run the conv stack in NHWC; the
        # model's own weights stay contiguous so that students' `.view` calls on them keep working.
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The type ``train`` and ``evaluate`` autocast to on ``device``: bf16 on a GPU with bf16
    hardware (compute capability 8.0+), fp16 on an older GPU (bf16 is only emulated there,
    and cuDNN has no bf16 convolutions), none (fp32) on the CPU."""
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def _precision(device: torch.device, cpu_bf16: bool) -> torch.dtype | None:
    """The autocast type of ``train`` and ``evaluate``: ``autocast_dtype``, or bf16 on the CPU
    when ``cpu_bf16`` asks for it."""
    return torch.bfloat16 if cpu_bf16 and device.type == "cpu" else autocast_dtype(device)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware, so that ``cpu_bf16=True`` is faster than
    fp32 rather than emulated and slower: on x86, AVX512-BF16 or AMX (an AVX-512 CPU without
    them, such as Skylake to Ice Lake, only emulates bf16); elsewhere (Arm), what oneDNN says."""
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older PyTorch, or a build without oneDNN
        return False


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


# One loss scaler per optimizer, kept across calls of ``train`` (one per epoch), so that its
# scale, once adapted, is not reset (and steps skipped again) at every epoch.
_SCALERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _scaler_for(optimizer: torch.optim.Optimizer, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler of fp16 training with ``optimizer``: fp16 gradients underflow to zero
    without one (bf16 has fp32's range and needs none)."""
    if optimizer not in _SCALERS:
        _SCALERS[optimizer] = torch.amp.GradScaler(device.type)
    return _SCALERS[optimizer]


@torch.enable_grad()
def train(
    model: nn.Module,
    dataloader: Iterable,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    callbacks: Sequence[Callable[[], Any]] | None = None,
    max_steps: int | None = None,
    *,
    verbose: bool = True,
    desc: str = "train",
    cpu_bf16: bool = False,
) -> float:
    """Train ``model`` for ONE epoch (or ``max_steps`` batches); return the mean training loss.

    The scheduler is stepped once per batch, so build it over the whole run's steps,
    ``num_epochs * len(dataloader)``. (The MIT lab builds a 5-epoch ``CosineAnnealingLR`` but
    steps it every batch, so its learning rate cycles up and down within each epoch; pass a
    per-step schedule such as ``make_finetune_setup``'s instead.)

    Gradients are on inside, whatever the caller's grad mode: a ``torch.no_grad()`` block or
    a ``torch.set_grad_enabled(False)`` left on by an earlier cell does not stop training.

    Args:
        model: the model, already on its device; it is left in training mode.
        dataloader: yields ``(inputs (N, 3, H, W), targets (N,))``; moved to the model's device.
        criterion: loss function of ``(logits, targets)``.
        optimizer: optimizer over the model's parameters.
        scheduler: learning-rate scheduler stepped after every optimizer step, or ``None``.
        callbacks: callables run after every optimizer step (a pruner re-applying its masks).
        max_steps: stop after this many batches, taken from the dataloader (``None``: all).
            A dataloader that yields no batch at all is a ``ValueError``.
        verbose: show a tqdm progress bar.
        desc: the progress bar's label.
        cpu_bf16: on the CPU, autocast to bf16 with channels_last inputs, as on a GPU
            (faster than fp32 on a CPU with bf16 hardware, ``cpu_has_bf16``: docs/results.md);
            no effect on other devices. For float models (not fake-quantized ones).

    Returns:
        The loss averaged over the training samples seen, as a Python float.
    """
    device = module_device(model)
    model.train()
    total = len(dataloader) if hasattr(dataloader, "__len__") else None
    if max_steps is not None:
        total = max_steps if total is None else min(total, max_steps)
    loss_sum = torch.zeros((), device=device)
    num_samples = 0
    dtype = _precision(device, cpu_bf16)
    scaler = _scaler_for(optimizer, device) if dtype == torch.float16 else None
    batches = dataloader if max_steps is None else itertools.islice(dataloader, max_steps)
    bar = tqdm(batches, total=total, desc=desc, leave=False, disable=not verbose)
    for step, (inputs, targets) in enumerate(bar):
        inputs = _to_device(inputs, device, channels_last=cpu_bf16)
        targets = _move(targets, device)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            outputs = model(inputs)
            loss = criterion(outputs, targets)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:  # skips the step when the scaled gradients overflowed, then adapts the scale
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if scheduler is not None:
            with warnings.catch_warnings():
                # a first step skipped by the scaler makes the scheduler warn; it keeps stepping
                # so that the schedule still ends where it was built to
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step")
                scheduler.step()
        for callback in callbacks or ():
            callback()
        loss_sum += loss.detach().float() * targets.shape[0]
        num_samples += targets.shape[0]
        if verbose and step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    if num_samples == 0 and max_steps != 0:
        raise ValueError("train: the dataloader yielded no batches (is its dataset empty?)")
    return (loss_sum / max(num_samples, 1)).item()


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataloader: Iterable,
    verbose: bool = True,
    extra_preprocess: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
    *,
    cpu_bf16: bool = False,
) -> float:
    """Top-1 accuracy of ``model`` on ``dataloader``, in percent (0 to 100).

    The model is evaluated in eval mode and each module's training flag is restored
    afterwards. Autocast (``autocast_dtype``) is used on CUDA unless the model holds integer
    weights.

    Args:
        model: the model, already on its device.
        dataloader: yields ``(inputs (N, 3, H, W), targets (N,))``; moved to the model's device.
        verbose: show a progress bar.
        extra_preprocess: functions applied to each input batch on the device, in order
            (as in the MIT quantization lab, e.g. shifting inputs to int8).
        cpu_bf16: as in ``train``: bf16 autocast and channels_last inputs on the CPU too.
    """
    device = module_device(model)
    flags = [(module, module.training) for module in model.modules()]
    set_eval(model)
    integer = _holds_integer_weights(model)
    dtype = None if integer else _precision(device, cpu_bf16)
    num_correct = torch.zeros((), dtype=torch.int64, device=device)
    num_samples = 0
    try:
        for inputs, targets in tqdm(dataloader, desc="eval", leave=False, disable=not verbose):
            inputs = _to_device(inputs, device, channels_last=cpu_bf16 and not integer)
            targets = _move(targets, device)
            for preprocess in extra_preprocess or ():
                inputs = preprocess(inputs)
            with _autocast(device, dtype):
                outputs = model(inputs)
            num_correct += (outputs.argmax(dim=1) == targets).sum()
            num_samples += targets.shape[0]
    finally:
        for module, training in flags:
            module.training = training
    if num_samples == 0:
        raise ValueError("evaluate: the dataloader yielded no batches (is its dataset empty?)")
    return (num_correct.item() / num_samples) * 100


def make_finetune_setup(
    model: nn.Module,
    num_epochs: int,
    steps_per_epoch: int,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Cross-entropy, SGD and a cosine schedule over ``num_epochs * steps_per_epoch`` steps.

    The schedule decays once from ``lr`` to 0 when ``train`` steps it every batch.
    """
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    total_steps = max(1, num_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return criterion, optimizer, scheduler


# ----------------------------------------------------------------------------- dense recipe


@dataclass(frozen=True)
class DenseRecipe:
    """Hyper-parameters of ``train_dense``; the defaults are the course recipe."""

    epochs: int = 20
    lr: float = 0.4  # peak learning rate of the triangular schedule
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 512
    label_smoothing: float = 0.0
    peak_fraction: float = 0.25  # the learning rate peaks after this fraction of the epochs


COURSE_RECIPE = DenseRecipe()
# Under the smoke profile: the small VGG, one epoch of synthetic data (28 steps), seconds on
# 2 CPU cores, about 97% on the synthetic test split (chance: 10%).
SMOKE_RECIPE = DenseRecipe(epochs=1, lr=0.1, batch_size=64, peak_fraction=0.3)


def default_recipe(profile: Profile) -> DenseRecipe:
    """The course recipe, or the short smoke recipe for synthetic data."""
    return SMOKE_RECIPE if profile.dataset == "synthetic" else COURSE_RECIPE


class TriangularLR:
    """Learning-rate factor rising linearly from 0 to 1 at ``peak_step``, then to 0 at the end."""

    def __init__(self, peak_step: float, total_steps: int) -> None:
        self.peak_step = float(peak_step)
        self.total_steps = float(total_steps)

    def __call__(self, step: int) -> float:
        return float(np.interp(step, [0.0, self.peak_step, self.total_steps], [0.0, 1.0, 0.0]))


@dataclass
class DenseResult:
    """What ``train_dense`` returns: the model (eval mode) and how it did."""

    model: nn.Module
    test_accuracy: float  # percent, on the profile's test split
    path: Path  # the saved checkpoint
    wall_s: float  # wall time of this call's training and evaluation
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, train_loss, test_accuracy


def partial_path(out: str | Path) -> Path:
    """Where ``train_dense`` keeps its resumable state for the checkpoint ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def default_dense_path(profile: Profile) -> Path:
    """Where ``train_dense`` writes by default: the dense checkpoint, or a smoke-only file."""
    name = "smoke-train-dense.pth" if profile.dataset == "synthetic" else DENSE_CHECKPOINT
    return data_dir() / name


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load_partial(path: Path, config: dict[str, Any], verbose: bool) -> dict[str, Any] | None:
    """The resumable state at ``path`` if it exists and was made with ``config``."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state["config"]
    except Exception as error:  # a torn or foreign file: start again rather than fail
        if verbose:
            print(f"ignoring {path}: unreadable ({error}); starting from scratch")
        return None
    if saved != config:
        changed = sorted(k for k in set(config) | set(saved) if config.get(k) != saved.get(k))
        if verbose:
            print(
                f"ignoring {path}: it was made with different settings ({', '.join(changed)}); "
                "starting from scratch"
            )
        return None
    return state


def dense_config(
    recipe: DenseRecipe, profile: Profile, seed: int, cpu_bf16: bool = False
) -> dict[str, Any]:
    """The settings ``train_dense`` records in its checkpoint's ``meta["recipe"]`` (and checks
    before resuming): the recipe, the profile's data and architecture, the seed, and
    ``cpu_bf16`` when it is on (so that fp32 runs keep the settings they always had)."""
    config = {
        **asdict(recipe),
        "profile": profile.name,
        "dataset": profile.dataset,
        "arch": list(profile.arch),
        "seed": seed,
    }
    if cpu_bf16:
        config["cpu_bf16"] = True
    return config


def train_dense(
    profile: Profile | str | None = None,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    batch_size: int | None = None,
    label_smoothing: float | None = None,
    peak_fraction: float | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
    dataloaders: dict[str, Any] | None = None,
    verbose: bool = True,
    cpu_bf16: bool = False,
) -> DenseResult:
    """Train the profile's VGG from scratch with the course recipe and save it (MIT layout).

    Every recipe setting left ``None`` takes the profile's recipe (``default_recipe``: the
    course recipe, or under smoke the short ``SMOKE_RECIPE``), as the command line does.

    The learning rate rises linearly from 0 to ``lr`` over the first ``peak_fraction`` of the
    steps and falls linearly back to 0 (stepped every batch). Training uses the profile's
    augmented training split (the held-out validation images excluded); the test split is
    evaluated after every epoch. After every epoch the model, optimizer, scheduler, epoch and
    RNG state go to ``<out>.partial``; a later call with the same settings and ``resume=True``
    continues from there. The final checkpoint is ``{"state_dict", "meta"}`` at ``out``
    (default: ``data_dir()/vgg.cifar.pretrained.pth``, or a smoke-only file under smoke).

    ``dataloaders`` (a dict with ``"train"`` and ``"test"``) replaces the profile's data; it is
    not part of the settings a resume checks. ``cpu_bf16`` trains and evaluates on the CPU in
    bf16 autocast with channels_last inputs, as a GPU with bf16 does (``train``); it is one of
    those settings (``config["cpu_bf16"]``) when it is on. The model's initial weights come from
    ``torch.manual_seed(seed)``: the global generators are left seeded by it.

    Returns:
        A ``DenseResult`` with the model in eval mode and its final test accuracy in percent.
    """
    from helpers.data import get_dataloaders

    if not isinstance(profile, Profile):
        profile = get_profile(profile)
    device = get_device(None if device is None else str(device))  # a GPU that is not here: error
    out = Path(out) if out is not None else default_dense_path(profile)
    partial = partial_path(out)
    given = {
        "epochs": epochs,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "label_smoothing": label_smoothing,
        "peak_fraction": peak_fraction,
    }
    recipe = replace(default_recipe(profile), **{k: v for k, v in given.items() if v is not None})
    epochs, lr, momentum, weight_decay, batch_size, label_smoothing, peak_fraction = (
        getattr(recipe, k) for k in given
    )
    if verbose and cpu_bf16 and device.type != "cpu":
        print(f"cpu_bf16 is for the CPU: ignored on {device.type}")
    cpu_bf16 = cpu_bf16 and device.type == "cpu"  # a GPU autocasts already (autocast_dtype)
    config = dense_config(recipe, profile, seed, cpu_bf16=cpu_bf16)
    if verbose and device.type == "cpu" and profile.dataset != "synthetic":
        minutes = "about 5" if cpu_bf16 else "9 to 35"
        print(
            f"training the dense VGG on the CPU: {epochs} epoch{'' if epochs == 1 else 's'}, "
            f"{minutes} minutes each on 2 CPU cores (docs/results.md); far faster on a GPU"
        )
        if cpu_bf16 and not cpu_has_bf16():
            print(
                "this CPU has no bf16 instructions: --cpu-bf16 emulates them, likely slower than fp32"
            )
        elif not cpu_bf16 and cpu_has_bf16():
            print(
                "this CPU has bf16 instructions: --cpu-bf16 trains faster, in bf16 as a GPU does "
                "(benchmarks/cpu_bf16.py)"
            )
    start = time.perf_counter()

    torch.manual_seed(seed)
    loaders = dataloaders or get_dataloaders(
        profile, device=device, seed=seed, batch_size=batch_size
    )
    train_loader, test_loader = loaders["train"], loaders["test"]
    steps_per_epoch = len(train_loader)
    model = VGG(profile.arch).to(device)
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    total_steps = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, TriangularLR(peak_fraction * total_steps, total_steps)
    )

    first_epoch = 0
    history: list[dict] = []
    state = _load_partial(partial, config, verbose) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        if state.get("scaler"):  # fp16 training's loss scale, as it had adapted
            _scaler_for(optimizer, device).load_state_dict(state["scaler"])
        first_epoch = int(state["epoch"])
        history = list(state["history"])
        if verbose:
            print(f"resuming from {partial} after epoch {first_epoch}/{epochs}")

    accuracy = history[-1]["test_accuracy"] if history else float("nan")
    for epoch in range(first_epoch, epochs):
        _set_loader_epoch(train_loader, epoch)
        train_loss = train(
            model,
            train_loader,
            criterion,
            optimizer,
            scheduler,
            verbose=verbose,
            desc=f"epoch {epoch + 1}/{epochs}",
            cpu_bf16=cpu_bf16,
        )
        accuracy = evaluate(model, test_loader, verbose=verbose, cpu_bf16=cpu_bf16)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "test_accuracy": accuracy})
        save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "rng": _rng_state(),
                "scaler": _SCALERS[optimizer].state_dict() if optimizer in _SCALERS else None,
                "config": config,
                "history": history,
            },
            partial,
        )
        if verbose:
            print(
                f"epoch {epoch + 1:>2}/{epochs}: train loss {train_loss:.4f}, "
                f"test accuracy {accuracy:.2f}% ({time.perf_counter() - start:.0f} s)"
            )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall_s = time.perf_counter() - start

    save_checkpoint(
        model,
        out,
        arch=list(profile.arch),
        num_classes=model.classifier.out_features,
        test_accuracy=accuracy,
        recipe=config,
        history=history,
        wall_s=wall_s,
        device=str(device),
        torch_version=str(torch.__version__),
    )
    partial.unlink(missing_ok=True)
    model.eval()
    if verbose:
        plural = "" if epochs == 1 else "s"
        print(
            f"test accuracy {accuracy:.2f}% ({profile.name} profile, {epochs} epoch{plural}); "
            f"wall time {wall_s:.1f} s on {device}; saved {out}"
        )
    return DenseResult(
        model=model, test_accuracy=accuracy, path=out, wall_s=wall_s, history=history
    )


def _set_loader_epoch(loader: Any, epoch: int) -> None:
    """Make the loader shuffle and augment as it would in ``epoch`` (for exact resumes)."""
    if hasattr(loader, "set_epoch"):  # torch-style samplers and loaders
        loader.set_epoch(epoch)
    elif hasattr(loader, "epoch"):  # helpers.data.DeviceLoader
        loader.epoch = epoch


def _describe_checkpoint(path: Path) -> str:
    """A few words on a checkpoint file: how it was trained, if it says."""
    try:
        meta = read_checkpoint(path).get("meta") or {}
    except CheckpointError:
        return "not a readable checkpoint"
    if "test_accuracy" in meta and "recipe" in meta:
        recipe = meta["recipe"]
        return (
            f"trained here: {recipe.get('epochs')} epochs, test accuracy "
            f"{float(meta['test_accuracy']):.2f}% on {meta.get('device', '?')}"
        )
    return "not trained by train-dense, perhaps the MIT file"


def train_dense_cli(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers train-dense``: train the dense VGG; returns the exit status."""
    from helpers.data import seed_argument

    parser = argparse.ArgumentParser(
        prog="python -m helpers train-dense",
        description=(
            "Train the dense VGG with the course recipe (SGD, triangular one-cycle learning "
            "rate) and save it in the MIT checkpoint layout. Resumes from <out>.partial after "
            "an interruption. Under the smoke profile it trains the small VGG on synthetic "
            "data in seconds."
        ),
    )
    parser.add_argument("--profile", help="full, quick or smoke (default: LAB_PROFILE or full)")
    parser.add_argument("--epochs", type=int, help=f"default: 20 (smoke: {SMOKE_RECIPE.epochs})")
    parser.add_argument(
        "--lr", type=float, help=f"peak learning rate (default: 0.4; smoke: {SMOKE_RECIPE.lr})"
    )
    parser.add_argument(
        "--batch-size", type=int, help=f"default: 512 (smoke: {SMOKE_RECIPE.batch_size})"
    )
    parser.add_argument("--label-smoothing", type=float, help="default: 0")
    parser.add_argument("--out", type=Path, help="checkpoint path (default: in LAB_DATA)")
    parser.add_argument("--seed", type=seed_argument, default=0)
    parser.add_argument("--device", help="cuda, cpu, ... (default: the best available)")
    parser.add_argument(
        "--cpu-bf16",
        action="store_true",
        help="on the CPU, train in bf16 autocast with channels-last inputs, as on a GPU "
        "(2.3x faster than fp32 on a CPU with AVX512-BF16, docs/results.md; emulated without)",
    )
    parser.add_argument("--no-resume", action="store_true", help="ignore <out>.partial")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a checkpoint already at the output path"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)

    from helpers.data import DataError
    from helpers.profiles import ProfileError

    try:
        profile = get_profile(args.profile)
    except ProfileError as error:
        print(error, file=sys.stderr)
        return 2
    out = args.out if args.out is not None else default_dense_path(profile)
    if out.exists() and not args.overwrite:
        print(
            f"{out} exists already ({_describe_checkpoint(out)}); training would replace it. "
            "Give --out PATH to keep both, or --overwrite to replace it.",
            file=sys.stderr,
        )
        return 2
    try:
        train_dense(  # flags left out are None: train_dense takes them from the profile's recipe
            profile,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            label_smoothing=args.label_smoothing,
            out=out,
            resume=not args.no_resume,
            seed=args.seed,
            device=args.device,
            cpu_bf16=args.cpu_bf16,
        )
    except ProfileError as error:  # a device that is not here
        print(error, file=sys.stderr)
        return 2
    except (DataError, CheckpointError) as error:
        print(error, file=sys.stderr)
        return 1
    return 0
