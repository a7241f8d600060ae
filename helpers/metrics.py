"""Counting what a model costs: MACs, parameters, sparsity and storage size.

Sizes are in **bits**, as in the course: divide by ``MiB`` (a number of bits) to print MiB.
Sparsity is the fraction of zeros, in [0, 1].

Dense size counts every parameter at ``data_width`` bits. A pruned tensor only gets smaller
on disk or in memory when stored in a sparse format, which also pays for indices;
``sparse_size_bits`` and ``size_report`` count that real cost.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torchprofile
from torch import nn

from helpers.profiles import module_device

Byte = 8  # bits
KiB = 1024 * Byte
MiB = 1024 * KiB
GiB = 1024 * MiB

SPARSE_FORMATS = ("csr", "bitmask", "coo")


def get_model_macs(model: nn.Module, inputs: Any) -> int:
    """Multiply-accumulates of one forward pass on ``inputs`` (e.g. a (1, 3, 32, 32) tensor).

    Counted by ``torchprofile.profile_macs`` (as in the MIT labs): convolutions and linear
    layers, plus one MAC per output element of affine BatchNorm and of mean/average pooling.
    The model is traced in eval mode (so BatchNorm statistics are not updated) without
    gradients; each module's training flag is restored afterwards. Tensor inputs are moved
    to the model's device. With ``torch.nn.utils.prune`` masks attached, the hook's
    ``weight_orig * weight_mask`` counts too (one MAC per weight): masks make a model dearer,
    never cheaper.
    """
    device = module_device(model)
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.to(device)
    elif isinstance(inputs, tuple):
        inputs = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Tracing complains about Python control flow it cannot see; that does not
            # change the count. Other warnings (e.g. an operator without a MAC handler,
            # which makes the count incomplete) still reach the user.
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            macs = torchprofile.profile_macs(model, inputs)
    finally:
        for module, mode in modes.items():
            module.training = mode
    return int(macs)


def get_sparsity(tensor: torch.Tensor) -> float:
    """Fraction of elements of ``tensor`` that are exactly zero (0.0 for an empty tensor)."""
    numel = tensor.numel()
    if numel == 0:
        return 0.0
    return 1.0 - int(tensor.count_nonzero()) / numel


def masked_name(module: nn.Module, param_name: str) -> str | None:
    """``"weight"`` if ``module``'s parameter ``param_name`` is ``"weight_orig"``, the unmasked
    weight behind a ``torch.nn.utils.prune`` mask that is still attached (the masked ``weight``
    the module computes with is then a plain attribute); ``None`` for any other parameter."""
    if param_name.endswith("_orig"):
        base = param_name[: -len("_orig")]
        if hasattr(module, base + "_mask") and isinstance(
            getattr(module, base, None), torch.Tensor
        ):
            return base
    return None


def _refuse_pruning_masks(model: nn.Module) -> None:
    """Stop with a clear message on a model pruned with ``torch.nn.utils.prune`` whose masks are
    still attached: its parameters are the unmasked ``weight_orig`` (the masked ``weight`` is a
    plain attribute), so counting zeros among them would find none of the pruned ones."""
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            if masked_name(module, name) is not None:
                where = f"{module_name}.{name}" if module_name else name
                raise ValueError(
                    f"cannot count the zeros among the model's parameters: {where} is the "
                    "unmasked weight of a torch.nn.utils.prune mask, which is still attached: "
                    "count the zeros of module.weight instead, or call prune.remove first"
                )


def get_num_parameters(model: nn.Module, count_nonzero_only: bool = False) -> int:
    """Number of parameters of ``model`` (only the nonzero ones if ``count_nonzero_only``).

    With ``count_nonzero_only``, a model with ``torch.nn.utils.prune`` masks still attached is
    refused (``ValueError``): its parameters are the unmasked weights.
    """
    if count_nonzero_only:
        _refuse_pruning_masks(model)
        return sum(int(p.count_nonzero()) for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


def get_model_sparsity(model: nn.Module) -> float:
    """Fraction of all of the model's parameters that are exactly zero (a model with
    ``torch.nn.utils.prune`` masks still attached is refused, as in ``get_num_parameters``)."""
    numel = get_num_parameters(model)
    if numel == 0:
        return 0.0
    return 1.0 - get_num_parameters(model, count_nonzero_only=True) / numel


def get_model_size(model: nn.Module, data_width: int = 32, count_nonzero_only: bool = False) -> int:
    """Model size in bits: number of (nonzero) parameters times ``data_width`` bits each.

    This ignores index overhead; for the real cost of storing a pruned tensor see
    ``sparse_size_bits``.
    """
    return get_num_parameters(model, count_nonzero_only) * data_width


def _as_matrix_shape(tensor: torch.Tensor) -> tuple[int, int]:
    """(rows, cols) of ``tensor`` viewed as a matrix: rows = dim 0, cols = the other dims.

    A 0-d or 1-d tensor is one row.
    """
    if tensor.dim() <= 1:
        return 1, tensor.numel()
    rows = tensor.shape[0]
    return rows, tensor.numel() // rows if rows else 0


def sparse_size_bits(
    tensor: torch.Tensor, fmt: str = "csr", data_width: int = 32, index_width: int = 32
) -> int:
    """Bits needed to store ``tensor`` in a sparse format (``nnz`` = number of nonzeros).

    Formats:
        ``"csr"``: compressed sparse rows of the tensor viewed as a matrix with
            rows = dim 0 (output channels) and cols = all other dims (a 0-d or 1-d tensor is
            one row). Stores the nonzero values, one column index per value and ``rows + 1``
            row pointers: ``nnz * data_width + nnz * index_width + (rows + 1) * index_width``.
            The layout of ``torch.Tensor.to_sparse_csr`` on that matrix view,
            ``tensor.reshape(rows, -1)`` (its indices are int64, so ``index_width=64``
            reproduces its byte count; on a 4-d tensor itself it would treat the leading
            dims as batches).
        ``"bitmask"``: one bit per element saying whether it is kept, plus the nonzero
            values: ``numel + nnz * data_width``.
        ``"coo"``: coordinate list, every nonzero stores its value and one index per
            dimension: ``nnz * (data_width + ndim * index_width)``.

    Args:
        tensor: any shape; zeros are the pruned elements.
        fmt: ``"csr"``, ``"bitmask"`` or ``"coo"``.
        data_width: bits per stored value (32 for float32, 8 for int8).
        index_width: bits per stored index or row pointer.

    Returns:
        The size in bits.
    """
    nnz = int(tensor.count_nonzero())
    if fmt == "csr":
        rows, _ = _as_matrix_shape(tensor)
        return nnz * data_width + nnz * index_width + (rows + 1) * index_width
    if fmt == "bitmask":
        return tensor.numel() + nnz * data_width
    if fmt == "coo":
        return nnz * (data_width + max(tensor.dim(), 1) * index_width)
    raise ValueError(f"unknown sparse format {fmt!r}; choose one of {', '.join(SPARSE_FORMATS)}")


def size_report(
    model: nn.Module,
    data_width: int = 32,
    index_width: int = 32,
    weights_only: bool = False,
) -> list[dict[str, Any]]:
    """Storage cost of each parameter tensor, dense and in sparse formats, in bits.

    One row per parameter (only conv/linear weights, i.e. tensors with 2+ dims, if
    ``weights_only``), then a ``"total"`` row. Keys: ``layer``, ``shape``, ``numel``, ``nnz``,
    ``sparsity``, ``dense_bits``, ``csr_bits``, ``bitmask_bits``, ``coo_bits``.
    The rows can be passed straight to ``helpers.plots.plot_comparison_table``. A model with
    ``torch.nn.utils.prune`` masks still attached is refused, as in ``get_num_parameters``.
    """
    _refuse_pruning_masks(model)
    rows: list[dict[str, Any]] = []
    for name, param in model.named_parameters():
        if weights_only and param.dim() <= 1:
            continue
        tensor = param.detach()
        rows.append(
            {
                "layer": name,
                "shape": "x".join(str(s) for s in tensor.shape),
                "numel": tensor.numel(),
                "nnz": int(tensor.count_nonzero()),
                "sparsity": get_sparsity(tensor),
                "dense_bits": tensor.numel() * data_width,
                "csr_bits": sparse_size_bits(tensor, "csr", data_width, index_width),
                "bitmask_bits": sparse_size_bits(tensor, "bitmask", data_width, index_width),
                "coo_bits": sparse_size_bits(tensor, "coo", data_width, index_width),
            }
        )
    total: dict[str, Any] = {"layer": "total", "shape": ""}
    for key in ("numel", "nnz", "dense_bits", "csr_bits", "bitmask_bits", "coo_bits"):
        total[key] = sum(row[key] for row in rows)
    total["sparsity"] = 1.0 - total["nnz"] / total["numel"] if total["numel"] else 0.0
    rows.append({key: total[key] for key in rows[0]} if rows else total)
    return rows
