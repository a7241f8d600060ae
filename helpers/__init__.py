"""The labs' provided library (no solutions).

Importing it warns when PyTorch is older than ``MIN_TORCH``, the oldest version the labs are
tested with (the whole test suite: docs/results.md, "PyTorch versions"). With 2.2, for
example, Lab 3 cannot load its saved int8 model (``torch.load``'s weights-only mode refuses
quantized tensors) and torchao 0.18 does not import.
"""

from __future__ import annotations

import re
import warnings

import torch

MIN_TORCH = (2, 11)
MIN_TORCHVISION = (0, 26)  # the torchvision of MIN_TORCH


def torch_version(text: str | None = None) -> tuple[int, int]:
    """(major, minor) of ``text``, by default ``torch.__version__`` ("2.11.0+cu130" -> (2, 11))."""
    match = re.match(r"(\d+)\.(\d+)", text or torch.__version__)
    if match is None:
        raise ValueError(f"not a PyTorch version: {text!r}")
    return int(match[1]), int(match[2])


def old_torch_message(text: str | None = None) -> str | None:
    """What to do about a PyTorch older than ``MIN_TORCH``; None when it is recent enough."""
    if torch_version(text) >= MIN_TORCH:
        return None
    minimum, vision = (".".join(map(str, v)) for v in (MIN_TORCH, MIN_TORCHVISION))
    return (
        f"PyTorch {text or torch.__version__} is older than {minimum}, the oldest these labs "
        f"are tested with: a cell may fail (with 2.2, Lab 3 cannot load its saved int8 model). "
        f"Upgrade with: pip install 'torch>={minimum}' 'torchvision>={vision}', then restart "
        "the kernel."
    )


if (_message := old_torch_message()) is not None:
    warnings.warn(_message, UserWarning, stacklevel=2)
