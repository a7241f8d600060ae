"""The one place that knows profiles, paths and the compute device.

A profile (``LAB_PROFILE``) sets how much work each lab does:

- ``full``: CIFAR-10, the pretrained dense VGG, the whole test set and the course's
  fine-tuning budget. GPU recommended.
- ``quick``: the same model, data and questions, cut down (evaluation subsets, fewer
  fine-tuning steps) so that a 2-core CPU laptop finishes a lab in minutes.
- ``smoke``: synthetic CIFAR-shaped data and a small VGG; every cell runs in seconds.
  Used by CI and by autograding. Numbers printed under ``smoke`` are meaningless.

``NBGRADER_EXECUTION`` (set by nbgrader and by our autograder) implies ``smoke`` unless
``LAB_PROFILE`` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent

VGG_ARCH: tuple = (64, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
SMALL_VGG_ARCH: tuple = (16, 32, "M", 32, 64, "M", 64, 64, "M", 64, 64, "M")


@dataclass(frozen=True)
class Profile:
    """How much work a lab does. Sizes are numbers of images; ``None`` means all."""

    name: str
    dataset: str  # "cifar10" or "synthetic"
    arch: tuple  # VGG layer list; "M" is a 2x2 max-pool
    batch_size: int  # training and fine-tuning batch
    eval_batch_size: int
    val_size: int  # images held out of the training split for decisions
    test_subset: int | None  # test images used for reported accuracy
    scan_subset: int | None  # validation images used per point of a sensitivity scan
    scan_sparsities: tuple[float, ...]  # sparsities tried by the sensitivity scan
    finetune_epochs: int
    finetune_steps_per_epoch: int | None  # None: whole epochs
    calib_batches: int  # batches used to calibrate quantization observers
    expected_minutes: str  # human-readable runtime of a whole lab
    note: str = field(default="")


PROFILES: dict[str, Profile] = {
    "full": Profile(
        name="full",
        dataset="cifar10",
        arch=VGG_ARCH,
        batch_size=128,
        eval_batch_size=512,
        val_size=5000,
        test_subset=None,
        scan_subset=None,
        scan_sparsities=(0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        finetune_epochs=5,
        finetune_steps_per_epoch=None,
        calib_batches=32,
        expected_minutes=(
            "a few on one GPU for Lab 1, 10 to 20 for Lab 3, whose int8 models run on the CPU "
            "(estimates, not yet measured); one to several hours on a CPU alone (measured on a "
            "2-core CPU with AVX-512: Lab 1 1.7 hours, Lab 3 54 minutes)"
        ),
        note="CIFAR-10, whole test set, 5 fine-tuning epochs.",
    ),
    "quick": Profile(
        name="quick",
        dataset="cifar10",
        arch=VGG_ARCH,
        batch_size=64,
        eval_batch_size=256,
        val_size=5000,
        test_subset=1000,
        scan_subset=256,
        scan_sparsities=(0.5, 0.7, 0.9),
        finetune_epochs=1,
        finetune_steps_per_epoch=40,
        calib_batches=4,
        expected_minutes="under 20 on a 2-core CPU",
        note=(
            "CIFAR-10 cut down for a CPU: accuracy on 1,000 test images (about +/-0.8 points "
            "of noise), sensitivity on 256 validation images, 40 fine-tuning steps instead of "
            "5 epochs, so fine-tuned accuracy stays a few points below `full`."
        ),
    ),
    # Autograding runs every notebook under smoke, so its cost is paid per submission: the
    # evaluation subsets and the fine-tuning steps are as small as still shows each effect.
    # Evaluation batches of 64 run this small VGG about 30% faster per image on a CPU than
    # batches of 256 (its activations stay in cache).
    "smoke": Profile(
        name="smoke",
        dataset="synthetic",
        arch=SMALL_VGG_ARCH,
        batch_size=64,
        eval_batch_size=64,
        val_size=256,  # also the smoke model's training split (2,048 - 256 images): keep
        test_subset=256,
        scan_subset=64,
        scan_sparsities=(0.5, 0.7, 0.9),
        finetune_epochs=1,
        finetune_steps_per_epoch=4,
        calib_batches=2,
        expected_minutes="under 2 on a 2-core CPU",
        note="SMOKE PROFILE: synthetic data and a small model. Every number is meaningless.",
    ),
}


class ProfileError(ValueError):
    """An unknown profile name."""


def profile_name() -> str:
    """The active profile's name: ``LAB_PROFILE``, else ``smoke`` under nbgrader, else ``full``."""
    name = os.environ.get("LAB_PROFILE", "").strip().lower()
    if not name:
        name = "smoke" if os.environ.get("NBGRADER_EXECUTION") else "full"
    return name


def get_profile(name: str | None = None) -> Profile:
    """The profile called ``name`` (default: from the environment, see ``profile_name``)."""
    name = (name or profile_name()).strip().lower()
    if name not in PROFILES:
        raise ProfileError(
            f"unknown profile {name!r} (from LAB_PROFILE or the argument); "
            f"choose one of {', '.join(PROFILES)}, for example `export LAB_PROFILE=quick`."
        )
    return PROFILES[name]


def expected_time(profile: Profile, device: torch.device | str) -> str:
    """The set-up cells' line on how long the whole lab takes; under ``full`` on a CPU, also a
    warning and how to switch (``full`` is the default, and takes hours there)."""
    line = f"expected minutes for the whole lab: {profile.expected_minutes}"
    if profile.name == "full" and torch.device(device).type == "cpu":
        line += (
            "\nWARNING: the full profile on a CPU takes one to several hours. On this computer, "
            "stop Jupyter and start it again with LAB_PROFILE=quick (for example "
            "`LAB_PROFILE=quick make lab`); on Colab, choose a GPU runtime (Runtime > Change "
            "runtime type)."
        )
    return line


def data_dir() -> Path:
    """Where data and checkpoints live: ``LAB_DATA``, default ``data/`` in the repository."""
    env = os.environ.get("LAB_DATA")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data"


def get_device(prefer: str | None = None) -> torch.device:
    """CUDA if present, else Apple MPS, else the CPU (``LAB_DEVICE`` or ``prefer`` overrides)."""
    choice = prefer or os.environ.get("LAB_DEVICE")
    if choice:
        where = f"device {choice!r}" if prefer else f"LAB_DEVICE={choice}"
        try:
            device = torch.device(choice)
        except RuntimeError as error:
            raise ProfileError(f"{where} is not a device PyTorch knows: {error}") from None
        available = {
            "cuda": torch.cuda.is_available,
            "mps": lambda: (
                getattr(torch.backends, "mps", None) is not None
                and torch.backends.mps.is_available()
            ),
        }
        if device.type in available and not available[device.type]():
            raise ProfileError(
                f"{where} asks for a {device.type.upper()} GPU, but PyTorch sees none here: "
                "use cpu, or leave it out to take the best device available"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_eval(model: nn.Module) -> None:
    """``model.eval()``, also for a module made by ``torch.export`` (``exported.module()``),
    which refuses ``eval()`` unless torchao's ``allow_exported_model_train_eval`` was applied
    to it; its graph runs the way it was exported (eval mode, as the labs export), whatever
    the flag says, so it is left as it is."""
    try:
        model.eval()
    except NotImplementedError:
        if not isinstance(model, torch.fx.GraphModule):
            raise


def module_device(model: nn.Module) -> torch.device:
    """The device of the first parameter or buffer of ``model`` (the CPU if it has none)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
