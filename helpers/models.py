"""The VGG of the MIT 6.5940 labs, for 32x32 CIFAR images.

The layer names match the course's public checkpoint (``vgg.cifar.pretrained.pth``), so its
``state_dict`` loads as is: ``backbone.conv{i}.weight``, ``backbone.bn{i}.{weight, bias,
running_mean, running_var, num_batches_tracked}``, ``classifier.{weight, bias}``.
With the default ``VGG_ARCH`` the model has 9,228,362 parameters.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from helpers.profiles import VGG_ARCH, Profile, get_profile


class VGG(nn.Module):
    """VGG for CIFAR: 3x3 conv (no bias) + BatchNorm + ReLU blocks, "M" = 2x2 max-pool.

    Shapes with the default ``arch``:
    input (N, 3, 32, 32) -> backbone (N, 512, 2, 2) -> spatial mean (N, 512)
    -> classifier logits (N, num_classes).

    Args:
        arch: channel counts of the conv layers in order, "M" for a max-pool.
        num_classes: number of output logits.
    """

    def __init__(self, arch: Sequence[int | str] = VGG_ARCH, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        in_channels = 3
        num_convs = num_pools = 0
        for item in arch:
            if item == "M":
                layers.append((f"pool{num_pools}", nn.MaxPool2d(2)))
                num_pools += 1
                continue
            out_channels = int(item)
            i = num_convs
            layers.append(
                (f"conv{i}", nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False))
            )
            layers.append((f"bn{i}", nn.BatchNorm2d(out_channels)))
            layers.append((f"relu{i}", nn.ReLU(inplace=True)))
            in_channels = out_channels
            num_convs += 1
        if num_convs == 0:
            raise ValueError(f"arch {tuple(arch)!r} has no conv layer")
        self.arch = tuple(arch)
        self.backbone = nn.Sequential(OrderedDict(layers))
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) for images ``x`` (N, 3, H, W) with values in [0, 1]."""
        x = self.backbone(x)  # (N, C, H / 16, W / 16)
        x = x.mean([2, 3])  # (N, C)
        return self.classifier(x)  # (N, num_classes)


def build_model(profile: Profile | str | None = None) -> VGG:
    """A freshly initialised VGG with the profile's architecture (default: active profile)."""
    if not isinstance(profile, Profile):
        profile = get_profile(profile)
    return VGG(profile.arch)
