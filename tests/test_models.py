"""Is the VGG the MIT 6.5940 lab's VGG: same layers, names, sizes and forward pass?"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.models import VGG, build_model
from helpers.profiles import SMALL_VGG_ARCH, VGG_ARCH, get_profile

# The number the course states for its dense VGG.
MIT_VGG_PARAMETERS = 9_228_362


def hand_count(arch, num_classes: int = 10) -> int:
    """Parameters by hand: 3x3 conv weights (no bias), BN scale and shift, linear classifier."""
    total, cin = 0, 3
    for item in arch:
        if item == "M":
            continue
        total += 3 * 3 * cin * item + 2 * item
        cin = item
    return total + cin * num_classes + num_classes


def test_dense_vgg_has_the_hand_counted_number_of_parameters():
    """Does the dense VGG have as many parameters as a count over its layer list, 9,228,362?"""
    num_parameters = sum(p.numel() for p in VGG().parameters())
    assert num_parameters == hand_count(VGG_ARCH)
    assert num_parameters == MIT_VGG_PARAMETERS


def test_state_dict_keys_follow_the_mit_checkpoint_names():
    """Would the MIT checkpoint's keys (backbone.conv{i}, backbone.bn{i}, classifier) fit?"""
    expected = []
    for i in range(8):
        expected.append(f"backbone.conv{i}.weight")
        expected += [
            f"backbone.bn{i}.{name}"
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        ]
    expected += ["classifier.weight", "classifier.bias"]
    assert list(VGG().state_dict()) == expected


def test_backbone_modules_are_named_and_ordered_like_the_course():
    """Are the backbone's children conv/bn/relu triples with pools after each "M", named so?"""
    names = [name for name, _ in VGG().backbone.named_children()]
    expected, conv, pool = [], 0, 0
    for item in VGG_ARCH:
        if item == "M":
            expected.append(f"pool{pool}")
            pool += 1
        else:
            expected += [f"conv{conv}", f"bn{conv}", f"relu{conv}"]
            conv += 1
    assert names == expected


def test_layer_settings():
    """3x3 convs with padding 1 and no bias, in-place ReLUs, 2x2 max-pools, Linear(512, 10)?"""
    model = VGG()
    for module in model.backbone:
        if isinstance(module, nn.Conv2d):
            assert module.kernel_size == (3, 3) and module.padding == (1, 1)
            assert module.bias is None
        elif isinstance(module, nn.ReLU):
            assert module.inplace
        elif isinstance(module, nn.MaxPool2d):
            assert module.kernel_size == 2
    assert (model.classifier.in_features, model.classifier.out_features) == (512, 10)


def test_forward_shapes():
    """(N, 3, 32, 32) -> backbone (N, 512, 2, 2) -> logits (N, 10)?"""
    model = VGG().eval()
    x = torch.rand(2, 3, 32, 32)
    assert model.backbone(x).shape == (2, 512, 2, 2)
    assert model(x).shape == (2, 10)


def test_forward_matches_functional_oracle():
    """Is forward conv -> BN -> ReLU (-> pool) then a spatial mean then the classifier?"""
    torch.manual_seed(0)
    model = VGG(SMALL_VGG_ARCH).eval()
    for module in model.modules():  # non-trivial running statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    x = torch.rand(3, 3, 32, 32)
    h, conv = x, 0
    for item in SMALL_VGG_ARCH:
        if item == "M":
            h = F.max_pool2d(h, 2)
            continue
        c = getattr(model.backbone, f"conv{conv}")
        b = getattr(model.backbone, f"bn{conv}")
        h = F.conv2d(h, c.weight, padding=1)
        h = F.batch_norm(h, b.running_mean, b.running_var, b.weight, b.bias, eps=b.eps)
        h = F.relu(h)
        conv += 1
    expected = F.linear(h.mean(dim=(2, 3)), model.classifier.weight, model.classifier.bias)
    torch.testing.assert_close(model(x), expected)


def test_build_model_uses_the_profile_arch():
    """Does build_model follow the profile: the course VGG for full, the small one for smoke?"""
    assert build_model("full").arch == VGG_ARCH
    small = build_model(get_profile("smoke"))
    assert small.arch == SMALL_VGG_ARCH
    assert small.classifier.in_features == SMALL_VGG_ARCH[-2]
    assert sum(p.numel() for p in small.parameters()) == hand_count(SMALL_VGG_ARCH)


def test_build_model_default_follows_lab_profile(monkeypatch):
    """Does build_model() with no argument use LAB_PROFILE?"""
    monkeypatch.setenv("LAB_PROFILE", "smoke")
    assert build_model().arch == SMALL_VGG_ARCH


def test_arch_without_conv_is_refused():
    """Is an architecture with no conv layer refused with a clear error?"""
    with pytest.raises(ValueError, match="no conv"):
        VGG(("M",))
