"""Do the cost counters (MACs, parameters, sparsity, sizes in bits) match independent counts?"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from helpers.metrics import (
    Byte,
    GiB,
    KiB,
    MiB,
    get_model_macs,
    get_model_size,
    get_model_sparsity,
    get_num_parameters,
    get_sparsity,
    size_report,
    sparse_size_bits,
)
from helpers.models import VGG
from helpers.profiles import SMALL_VGG_ARCH, VGG_ARCH


def hand_count_vgg(arch, num_classes=10, size=32):
    """(conv + linear MACs, BatchNorm + mean MACs, parameters) from the layer shapes alone."""
    conv_linear = norm_mean = params = 0
    channels, height = 3, size
    for item in arch:
        if item == "M":
            height //= 2
            continue
        # 3x3 conv, padding 1: output is cout x H x W, each output needs cin*3*3 MACs.
        conv_linear += item * channels * 3 * 3 * height * height
        params += item * channels * 3 * 3 + 2 * item  # conv weight (no bias) + BN weight, bias
        # torchprofile also counts one MAC per output element of an affine BatchNorm.
        norm_mean += item * height * height
        channels = item
    norm_mean += channels  # x.mean([2, 3]): one per output element
    conv_linear += channels * num_classes
    params += channels * num_classes + num_classes
    return conv_linear, norm_mean, params


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return VGG(VGG_ARCH)


@pytest.mark.parametrize("arch", [VGG_ARCH, SMALL_VGG_ARCH], ids=["vgg", "small"])
def test_macs_match_hand_count(arch):
    """Does get_model_macs count every conv, linear, BatchNorm and mean op of the VGG?"""
    conv_linear, norm_mean, _ = hand_count_vgg(arch)
    assert get_model_macs(VGG(arch), torch.randn(1, 3, 32, 32)) == conv_linear + norm_mean


def test_macs_of_full_vgg_is_the_course_number():
    """Is the hand count for the full VGG near the ~606M MACs the MIT lab reports?"""
    conv_linear, norm_mean, _ = hand_count_vgg(VGG_ARCH)
    assert 605e6 < conv_linear + norm_mean < 607e6
    assert norm_mean < 0.001 * conv_linear  # BatchNorm and mean are a rounding error


def test_macs_of_conv_and_linear_only():
    """Without BatchNorm, is the count exactly cout*cin*kh*kw*H_out*W_out + in*out?"""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=1),  # 32 -> 28
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, stride=2, padding=1),  # 28 -> 14
        nn.Flatten(),
        nn.Linear(4 * 14 * 14, 7),
    )
    expected = 8 * 3 * 5 * 5 * 28 * 28 + 4 * 8 * 3 * 3 * 14 * 14 + 4 * 14 * 14 * 7
    assert get_model_macs(model, torch.randn(1, 3, 32, 32)) == expected


def test_macs_count_the_mask_multiply_of_a_pruned_layer():
    """With a torch.nn.utils.prune mask attached, is the hook's weight_orig * weight_mask
    counted, one MAC per weight, as the docstring says (masks never make a model cheaper)?"""
    from torch.nn.utils import prune

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    x = torch.zeros(1, 3, 8, 8)
    dense = get_model_macs(model, x)
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    assert get_model_macs(model, x) == dense + model[0].weight.numel()


def test_macs_scale_with_batch_size():
    """Are MACs counted for the whole batch given (the course always uses batch 1)?"""
    model = VGG(SMALL_VGG_ARCH)
    one = get_model_macs(model, torch.randn(1, 3, 32, 32))
    assert get_model_macs(model, torch.randn(3, 3, 32, 32)) == 3 * one


def test_macs_leave_model_untouched_and_quiet():
    """Does profiling keep training flags and BatchNorm statistics, and warn about nothing?"""
    model = VGG(SMALL_VGG_ARCH).train()
    model.backbone.bn1.eval()  # a mixed state must survive too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_model_macs(model, torch.randn(2, 3, 32, 32))
    assert [str(w.message) for w in caught] == []
    assert model.training and model.backbone.bn0.training
    assert not model.backbone.bn1.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_num_parameters_and_size_of_vgg(vgg):
    """Does the course VGG have 9,228,362 parameters, i.e. 35.20 MiB at 32 bits?"""
    _, _, hand_params = hand_count_vgg(VGG_ARCH)
    assert get_num_parameters(vgg) == hand_params == 9_228_362
    assert get_model_size(vgg) == 9_228_362 * 32
    assert round(get_model_size(vgg) / MiB, 2) == 35.20
    assert get_model_size(vgg, data_width=8) == 9_228_362 * 8


def test_units_are_bits():
    """Are Byte, KiB, MiB and GiB numbers of bits?"""
    assert (Byte, KiB, MiB, GiB) == (8, 8 * 1024, 8 * 1024**2, 8 * 1024**3)


def _zero_random_entries(model, fraction, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param[torch.rand(param.shape, generator=generator) < fraction] = 0


def _brute_force_nonzeros(model):
    return sum(1 for p in model.parameters() for v in p.detach().flatten().tolist() if v != 0)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.9])
def test_count_nonzero_only_matches_brute_force(fraction):
    """After zeroing random weights, do the nonzero counts match a Python loop over values?"""
    model = VGG(SMALL_VGG_ARCH)
    _zero_random_entries(model, fraction, seed=1)
    nonzeros = _brute_force_nonzeros(model)
    total = sum(len(p.flatten().tolist()) for p in model.parameters())
    assert get_num_parameters(model, count_nonzero_only=True) == nonzeros
    assert get_model_size(model, count_nonzero_only=True) == nonzeros * 32
    assert get_model_sparsity(model) == pytest.approx(1 - nonzeros / total)
    if fraction:
        assert get_model_sparsity(model) == pytest.approx(fraction, abs=0.02)


def test_sparsity_of_tensors():
    """Is sparsity the fraction of exact zeros?"""
    assert get_sparsity(torch.tensor([0.0, 1.0, 0.0, -2.0])) == 0.5
    assert get_sparsity(torch.zeros(3, 3)) == 1.0
    assert get_sparsity(torch.ones(2, 5)) == 0.0
    assert get_sparsity(torch.tensor([1e-30, 0.0])) == 0.5  # tiny is not zero
    assert get_sparsity(torch.empty(0)) == 0.0


def _random_sparse(shape, sparsity, seed):
    generator = torch.Generator().manual_seed(seed)
    tensor = torch.randn(shape, generator=generator)
    tensor[torch.rand(shape, generator=generator) < sparsity] = 0
    return tensor


def _torch_bits(*tensors):
    return sum(t.numel() * t.element_size() * 8 for t in tensors)


SHAPES = [(5, 5), (64, 27), (10, 512), (1, 100), (100, 1), (16, 8, 3, 3), (4, 3, 5)]


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
def test_csr_size_matches_torch(shape, sparsity):
    """Does the CSR formula give the bytes torch's to_sparse_csr stores (int64 indices)?"""
    tensor = _random_sparse(shape, sparsity, seed=len(shape) + int(10 * sparsity))
    csr = tensor.reshape(shape[0], -1).to_sparse_csr()
    assert csr.col_indices().dtype == torch.int64
    expected = _torch_bits(csr.values(), csr.col_indices(), csr.crow_indices())
    assert sparse_size_bits(tensor, "csr", data_width=32, index_width=64) == expected


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.7])
def test_coo_size_matches_torch(shape, sparsity):
    """Does the COO formula give the bytes of torch's to_sparse (values + int64 indices)?"""
    tensor = _random_sparse(shape, sparsity, seed=7)
    coo = tensor.to_sparse().coalesce()
    expected = _torch_bits(coo.values(), coo.indices())
    assert sparse_size_bits(tensor, "coo", data_width=32, index_width=64) == expected


def test_sparse_formats_on_a_hand_example():
    """On [[1, 0], [0, 2]] do CSR, bitmask and COO cost what a pencil count says?"""
    tensor = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # CSR: 2 values + 2 column indices + 3 row pointers.
    assert sparse_size_bits(tensor, "csr") == 2 * 32 + 2 * 32 + 3 * 32
    assert sparse_size_bits(tensor, "csr", data_width=8, index_width=16) == 16 + 32 + 48
    # Bitmask: 4 mask bits + 2 values.
    assert sparse_size_bits(tensor, "bitmask") == 4 + 2 * 32
    assert sparse_size_bits(tensor, "bitmask", data_width=8) == 4 + 2 * 8
    # COO: each of 2 values with a row and a column index.
    assert sparse_size_bits(tensor, "coo") == 2 * (32 + 2 * 32)


def test_bitmask_on_tiny_tensors():
    """Is a bitmask one bit per element plus the kept values, whatever the shape?"""
    assert sparse_size_bits(torch.zeros(3, 3), "bitmask") == 9
    assert sparse_size_bits(torch.ones(2, 2, 2), "bitmask", data_width=4) == 8 + 8 * 4
    assert sparse_size_bits(torch.tensor([0.0, 5.0, 0.0]), "bitmask") == 3 + 32


def test_csr_of_a_vector_is_one_row():
    """Is a 1-d tensor stored as a single CSR row (two row pointers)?"""
    assert sparse_size_bits(torch.tensor([0.0, 1.0, 2.0]), "csr") == 2 * 32 + 2 * 32 + 2 * 32


def test_unknown_format_is_refused():
    """Does a typo in the format name fail and list the formats?"""
    with pytest.raises(ValueError, match="csr, bitmask, coo"):
        sparse_size_bits(torch.ones(2, 2), "csc")


def test_size_report_totals():
    """Do the per-layer rows add up, and does the dense total equal get_model_size?"""
    model = VGG(SMALL_VGG_ARCH)
    _zero_random_entries(model, 0.8, seed=3)
    rows = size_report(model)
    layers, total = rows[:-1], rows[-1]
    assert [r["layer"] for r in layers] == [name for name, _ in model.named_parameters()]
    assert total["layer"] == "total"
    assert total["dense_bits"] == get_model_size(model)
    assert total["nnz"] == get_num_parameters(model, count_nonzero_only=True)
    for key in ("csr_bits", "bitmask_bits", "coo_bits", "numel"):
        assert total[key] == sum(r[key] for r in layers)
    assert total["sparsity"] == pytest.approx(get_model_sparsity(model))
    weights = size_report(model, weights_only=True)[:-1]
    assert all("weight" in r["layer"] and "bn" not in r["layer"] for r in weights)
    assert len(weights) == sum(1 for p in model.parameters() if p.dim() > 1)


def test_size_report_shows_when_sparse_formats_pay_off():
    """At 90% sparsity are CSR and bitmask smaller than dense, and at 0% larger?"""
    dense_row = size_report(nn.Linear(256, 256, bias=False))[0]
    assert dense_row["csr_bits"] > dense_row["dense_bits"]
    assert dense_row["bitmask_bits"] > dense_row["dense_bits"]
    layer = nn.Linear(256, 256, bias=False)
    _zero_random_entries(layer, 0.9, seed=0)
    sparse_row = size_report(layer)[0]
    assert sparse_row["csr_bits"] < sparse_row["dense_bits"]
    assert sparse_row["bitmask_bits"] < sparse_row["csr_bits"]


def test_counts_of_zeros_refuse_a_model_with_prune_masks_attached():
    """With torch.nn.utils.prune's masks attached the parameters are the unmasked weight_orig:
    counting their zeros would report none of the pruned weights. The counts of zeros stop with
    a message saying what to do; the dense counts and a model after prune.remove are fine."""
    import torch.nn.utils.prune as prune

    model = VGG(SMALL_VGG_ARCH)
    dense, nonzero = get_num_parameters(model), get_num_parameters(model, count_nonzero_only=True)
    prune.l1_unstructured(model.backbone.conv1, "weight", amount=0.5)
    for count in (
        lambda: get_num_parameters(model, count_nonzero_only=True),
        lambda: get_model_sparsity(model),
        lambda: get_model_size(model, count_nonzero_only=True),
        lambda: size_report(model),
    ):
        with pytest.raises(ValueError, match=r"backbone\.conv1\.weight_orig .*prune\.remove"):
            count()
    assert get_num_parameters(model) == dense  # weight_orig has the weight's shape
    prune.remove(model.backbone.conv1, "weight")
    zeros = model.backbone.conv1.weight.numel() // 2
    assert get_num_parameters(model, count_nonzero_only=True) == nonzero - zeros
