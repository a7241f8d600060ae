"""The labs' provided library (no solutions).

Importing it warns when PyTorch is older than ``MIN_TORCH``, the oldest version the labs are
tested with (2.11.0 and 2.14.1 run the whole test suite). With 2.2, for example, Lab 3 cannot
load a saved int8 model (``torch.load``'s weights-only mode refuses quantized tensors) and
skips its PT2E section (torchao 0.18 needs 2.11).
"""

from __future__ import annotations

import re
import warnings

import torch

MIN_TORCH = (2, 11)


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
    minimum = ".".join(map(str, MIN_TORCH))
    return (
        f"PyTorch {text or torch.__version__} is older than {minimum}, the oldest these labs "
        f"are tested with: some cells may fail (Lab 3 cannot load a saved int8 model, and "
        f"skips PT2E). Upgrade with: pip install 'torch>={minimum}' 'torchvision>=0.26', then "
        "restart the kernel."
    )


if (_message := old_torch_message()) is not None:
    warnings.warn(_message, UserWarning, stacklevel=2)
