"""Provided tools for Lab 3 (quantization and pruning with PyTorch's own tools). No solutions.

- ``state_dict_bytes``: the size on disk of a saved state dict (``torch.save`` into memory),
  optionally after zlib compression (what a zip of the ``.pth`` file would take).
- ``select_quantized_engine``: picks the int8 CPU backend (``x86``, else ``fbgemm``, else
  ``qnnpack``) and says what this CPU offers for int8 (``cpu_capability``).
- ``torchao_status``: whether torchao's PT2E quantization can be used here, with a message
  that says how to install it when it cannot.
- ``filter_quantization_warnings`` / ``quantization_warnings_silenced``: hide the known,
  harmless deprecation warnings of ``torch.ao.quantization`` (see ``KNOWN_WARNINGS``), and
  only those: a warning about a real problem (an observer that saw no data) still shows.
- ``quantized_module_names`` and ``quantized_weight_sparsity``: which modules of a model hold
  int8 kernels, and the fraction of their integer weights that are zero.
- ``graph_state_dict`` and ``drop_unused_tensors``: the tensors a ``torch.fx.GraphModule``'s
  graph really reads, and removing the others (PT2E's converted module still carries the
  fp32 weights beside its int8 ones, although no node reads them).
- ``pt2e_quantize_steps``: the quantize steps in a converted PT2E graph, and a clear error
  when there are none (a quantizer that matched nothing leaves the fp32 model unchanged).
- ``latency_by_batch``: ``helpers.latency.compare_latency`` at several batch sizes.
- ``format_table`` and ``plot_layer_sparsity``: show a list of row dicts as text, and
  per-layer sparsity of several models as grouped bars.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from helpers import old_torch_message
from helpers.latency import LatencyResult, compare_latency
from helpers.plots import format_cell, new_figure
from helpers.profiles import module_device  # noqa: F401  (re-exported: Lab 3 imports it from here)

TORCHAO_REQUIREMENT = "torchao>=0.18,<0.19"
TORCHAO_INSTALL = f".venv/bin/pip install '{TORCHAO_REQUIREMENT}'"
ENGINE_PREFERENCE = ("x86", "fbgemm", "qnnpack")

# (category, regular expression matched against the start of the message, why it is harmless)
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (
        DeprecationWarning,
        r"torch\.ao\.quantization is deprecated",
        "prepare_fx/convert_fx still work in this PyTorch; new code should use torchao's PT2E "
        "flow (prepare_pt2e/convert_pt2e), shown later in the lab",
    ),
    (
        UserWarning,
        r"Please use quant_min and quant_max to specify the range for observers",
        "reduce_range=True means quant_min=0, quant_max=127 for quint8; both spell the same range",
    ),
    (
        UserWarning,
        r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor",
        "the quantized tensor types (quint8, qint8) behind FX's int8 kernels are being retired "
        "in favour of plain int8 tensors (PT2E); they still work here",
    ),
    (
        UserWarning,
        r"TypedStorage is deprecated",
        "torch.load reads quantized tensors through the old storage API; the loaded values "
        "are right",
    ),
    (
        UserWarning,
        r"The given buffer is not writable",
        "torch.export.load in some PyTorch versions (2.11, say) reads the saved tensors from "
        "a read-only buffer; nothing writes to them, and the lab checks the reloaded outputs",
    ),
)


# ----------------------------------------------------------------------------- sizes


def _as_state_dict(obj: nn.Module | Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.state_dict() if isinstance(obj, nn.Module) else obj


def state_dict_bytes(obj: nn.Module | Mapping[str, Any], compress: bool = False) -> int:
    """Bytes that ``torch.save(state_dict)`` writes for ``obj`` (a model or a state dict).

    The state dict is saved into an in-memory buffer: the number is the size of the ``.pth``
    file ``torch.save(obj.state_dict(), path)`` writes: exactly for a file named
    ``archive.pth``; otherwise it differs by tens of bytes per tensor (the zip records inside
    are named after the file, ``archive`` for a buffer, and padded to 64-byte boundaries): a
    few kB for a VGG, next to its MiB. With ``compress``,
    the bytes after zlib compression (level 6, like zip): zeros from pruning only make a file
    smaller once it is compressed or stored in a sparse format.
    """
    buffer = io.BytesIO()
    torch.save(_as_state_dict(obj), buffer)
    data = buffer.getvalue()
    return len(zlib.compress(data, 6)) if compress else len(data)


def graph_state_dict(model: torch.fx.GraphModule) -> dict[str, Any]:
    """The tensors that ``model.graph`` reads (its ``get_attr`` nodes), by name, and the state
    dict entries of the modules it calls (``call_module`` nodes, as in an FX-converted model).

    For a module converted by PT2E's ``convert_pt2e`` this is what inference needs: the
    folded int8 weights (``_frozen_param*``), their scales and zero points, and the biases,
    but not the fp32 weights that ``state_dict()`` still holds although no node reads them.
    """
    tensors: dict[str, Any] = {}
    for node in model.graph.nodes:
        if node.op == "call_module":  # a module the graph calls: all of its state
            for key, value in model.get_submodule(str(node.target)).state_dict().items():
                tensors[f"{node.target}.{key}"] = value
        if node.op != "get_attr":
            continue
        value: Any = model
        for part in str(node.target).split("."):
            value = getattr(value, part)
        if isinstance(value, torch.Tensor):
            tensors[str(node.target)] = value
    return tensors


def drop_unused_tensors(model: torch.fx.GraphModule) -> list[str]:
    """Delete the parameters and buffers of ``model`` that no node of its graph reads.

    After ``convert_pt2e`` the original fp32 weights stay registered although the graph uses
    their int8 copies; dropping them makes ``state_dict()`` and ``torch.export.save`` hold
    only the int8 model. Returns the names deleted. The outputs do not change.
    """
    used = {str(node.target) for node in model.graph.nodes if node.op == "get_attr"}
    called = tuple(f"{node.target}." for node in model.graph.nodes if node.op == "call_module")
    named = list(model.named_parameters()) + list(model.named_buffers())
    dropped = []
    for name, _ in named:
        if name in used or name.startswith(called):
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        delattr(owner, attr)
        dropped.append(name)
    return dropped


def pt2e_quantize_steps(model: torch.fx.GraphModule) -> int:
    """How many quantize steps (``quantize_per_tensor``, ``quantize_per_channel``) the graph of
    a ``convert_pt2e`` model holds. Raises ``RuntimeError`` when there are none.

    A quantizer that matches no layer quantizes nothing, and ``convert_pt2e`` then returns the
    fp32 model without a word: its accuracy, size and speed would be reported as int8's.
    This happens with ``X86InductorQuantizer`` and a non-strict ``torch.export`` (the
    default in recent versions) before PyTorch 2.12 (seen with 2.11): the graph does not
    record which module each node came from, and the quantizer finds layers by their module.
    ``torch.export.export(..., strict=True)`` records it in every version.
    """
    steps = sum(
        node.op == "call_function"
        and str(node.target).split(".")[1:2] in (["quantize_per_tensor"], ["quantize_per_channel"])
        for node in model.graph.nodes
    )
    if steps == 0:
        raise RuntimeError(
            f"convert_pt2e quantized nothing (no quantize step in the graph; torch "
            f"{torch.__version__}): the quantizer matched no layer, so this model is still the "
            "fp32 one. Export with torch.export.export(model, (example,), strict=True, ...): "
            "before PyTorch 2.12 a non-strict export does not record which module each node "
            "came from, which is how X86InductorQuantizer finds convolutions and linear layers."
        )
    return steps


# ----------------------------------------------------------------------------- backend


def cpu_capability() -> str:
    """The widest vector instruction set PyTorch's CPU kernels use here (e.g. ``AVX2``)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def cpu_has_vnni() -> bool | None:
    """Whether this CPU has VNNI (AVX-512 VNNI or AVX-VNNI: int8 products summed in 32 bits),
    as PyTorch sees it; None when this PyTorch cannot tell (``torch.cpu._is_vnni_supported``
    is private and may go)."""
    check = getattr(torch.cpu, "_is_vnni_supported", None)
    try:
        return None if check is None else bool(check())
    except RuntimeError:
        return None


def select_quantized_engine(preference: Sequence[str] = ENGINE_PREFERENCE) -> str:
    """Set ``torch.backends.quantized.engine`` to the first supported of ``preference``.

    ``x86`` (PyTorch >= 2.0) picks fbgemm or oneDNN kernels per operator; ``fbgemm`` is
    the older x86 name; ``qnnpack`` serves ARM CPUs. Returns the engine chosen.
    """
    supported = list(torch.backends.quantized.supported_engines)
    for engine in preference:
        if engine in supported:
            torch.backends.quantized.engine = engine
            return engine
    raise RuntimeError(
        f"none of the int8 engines {list(preference)} is available in this PyTorch build "
        f"(supported: {supported}); int8 inference needs a PyTorch built with FBGEMM (x86) "
        "or QNNPACK (ARM)"
    )


@dataclass(frozen=True)
class TorchaoStatus:
    """Whether torchao's PT2E quantization can run here; ``message`` says what to do if not."""

    available: bool
    version: str | None
    message: str


def torchao_status() -> TorchaoStatus:
    """Check that torchao imports and offers ``prepare_pt2e``, ``convert_pt2e`` and the x86
    quantizer. Never raises: a missing or broken torchao is reported in the message."""
    # torchao registers pytree types at import and torch logs a harmless notice about it.
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        import torchao
        from torchao.quantization.pt2e.quantize_pt2e import (  # noqa: F401
            convert_pt2e,
            prepare_pt2e,
        )
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (  # noqa: F401
            X86InductorQuantizer,
        )
    except Exception as error:  # ImportError, or a torchao built for another torch
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        advice = old_torch_message() or (
            f"To try it, run `{TORCHAO_INSTALL}` (it does not change torch) and restart the kernel."
        )
        return TorchaoStatus(
            available=False,
            version=None,
            message=(
                f"torchao's PT2E quantization is not available here ({reason}). The PT2E "
                f"section is skipped; everything else in the lab runs. {advice}"
            ),
        )
    finally:
        pytree_log.setLevel(level)
    version = str(getattr(torchao, "__version__", "unknown"))
    return TorchaoStatus(
        available=True,
        version=version,
        message=f"torchao {version} with torch {torch.__version__}: PT2E quantization available.",
    )


# ----------------------------------------------------------------------------- warnings


def _install_filters() -> None:
    for category, pattern, _ in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)


def filter_quantization_warnings(verbose: bool = True) -> list[str]:
    """Hide the warnings in ``KNOWN_WARNINGS`` for the rest of the session; return them.

    Each filter matches one known message by its first words, so any other warning (for
    example "must run observer before calling calculate_qparams", which means a model was
    converted without calibration) still shows.
    """
    _install_filters()
    lines = [
        f"{category.__name__}: {pattern!r} ({why})" for category, pattern, why in KNOWN_WARNINGS
    ]
    if verbose:
        print("Hiding these known warnings from now on (each is a warning, not an error):")
        for line in lines:
            print(" -", line.replace("\\", ""))
    return lines


@contextmanager
def quantization_warnings_silenced() -> Iterator[None]:
    """Within the block, hide the warnings in ``KNOWN_WARNINGS`` (and only those).

    The filters go first, so they also win over ``-W error``-style settings.
    """
    with warnings.catch_warnings():
        _install_filters()
        yield


def describe_warnings(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """One line per distinct warning caught by ``warnings.catch_warnings(record=True)``."""
    seen: dict[str, int] = {}
    for item in caught:
        first_line = str(item.message).strip().splitlines()[0] if str(item.message) else ""
        key = f"{item.category.__name__}: {first_line}"
        seen[key] = seen.get(key, 0) + 1
    return [f"{key}  (x{count})" if count > 1 else key for key, count in seen.items()]


# ----------------------------------------------------------------------------- modules


def is_quantized_module(module: nn.Module) -> bool:
    """Whether ``module`` is one of PyTorch's int8 modules (``torch.ao.nn.quantized`` and the
    fused ``torch.ao.nn.intrinsic.quantized`` ones), whose weights are packed int8."""
    name = type(module).__module__
    return name.startswith("torch.ao.nn.quantized") or name.startswith(
        "torch.ao.nn.intrinsic.quantized"
    )


def quantized_module_names(model: nn.Module) -> dict[str, str]:
    """``{module name: class name}`` for every int8 module of ``model`` (see above)."""
    return {
        name: type(module).__name__
        for name, module in model.named_modules()
        if name and is_quantized_module(module) and not _is_helper(module)
    }


def quantized_weight_sparsity(model: nn.Module) -> float:
    """Fraction of zeros over the int8 weights of the int8 modules of ``model``: weights stored
    as the integer that means 0.0 (0 for symmetric weights, the zero point for affine ones)."""
    zeros = numel = 0
    for name in quantized_module_names(model):
        weight = getattr(model.get_submodule(name), "weight", None)
        if callable(weight):
            values = weight().dequantize()  # (integer - zero point) * scale: 0 exactly there
            zeros += int((values == 0).sum())
            numel += values.numel()
    return zeros / numel if numel else 0.0


def _is_helper(module: nn.Module) -> bool:
    """Quantize/DeQuantize stubs and packed-parameter holders: parts of an int8 module."""
    return type(module).__name__ in {"Quantize", "DeQuantize", "LinearPackedParams"}


# ----------------------------------------------------------------------------- latency


def latency_by_batch(
    models: Mapping[str, nn.Module],
    batch_sizes: Sequence[int] = (1, 64),
    num_threads: int | None = None,
    n_warmup: int = 10,
    n_test: int = 50,
    image_shape: tuple[int, int, int] = (3, 32, 32),
) -> dict[str, dict[int, LatencyResult]]:
    """Latency of each model at each batch size: ``result[name][batch_size]``.

    For each batch size the models are timed in turns on the same input
    (``helpers.latency.compare_latency``), with ``num_threads`` CPU threads. A batch of ``b``
    images takes about ``b`` times longer, so batches above 1 use ``max(3, n_test // 4)``
    timed calls and at most 2 warm-up calls.
    """
    results: dict[str, dict[int, LatencyResult]] = {name: {} for name in models}
    for batch_size in batch_sizes:
        warmup, timed = (
            (n_warmup, n_test) if batch_size == 1 else (min(n_warmup, 2), max(3, n_test // 4))
        )
        dummy_input = torch.zeros(batch_size, *image_shape)
        measured = compare_latency(
            models, dummy_input, n_warmup=warmup, n_test=timed, num_threads=num_threads
        )
        for name, result in measured.items():
            results[name][batch_size] = result
    return results


# ----------------------------------------------------------------------------- display


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """``rows`` (dicts) as an aligned text table; numbers formatted by ``format_cell``.

    Columns default to the keys in order of first appearance; a missing key is blank.
    """
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = []
        for row in rows:
            columns += [key for key in row if key not in columns]
    cells = [[format_cell(row.get(key)) for key in columns] for row in rows]
    numeric = [
        all(
            isinstance(row.get(key), int | float | np.number) and not isinstance(row.get(key), bool)
            for row in rows
            if row.get(key) is not None
        )
        for key in columns
    ]
    widths = [
        max(len(str(key)), *(len(line[j]) for line in cells)) for j, key in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if is_number else value.ljust(width)
            for value, width, is_number in zip(values, widths, numeric, strict=True)
        ).rstrip()

    header = line([str(key) for key in columns])
    rule = "  ".join("-" * width for width in widths)
    return "\n".join([header, rule, *(line(values) for values in cells)])


def _short_layer_name(name: str) -> str:
    """``backbone.conv3.weight`` -> ``conv3``; ``classifier.weight`` -> ``classifier``."""
    name = re.sub(r"\.weight$", "", name)
    return name.split(".")[-1]


def plot_layer_sparsity(
    tables: Mapping[str, Sequence[Mapping[str, Any]]], title: str | None = None
) -> Figure:
    """Grouped bars of per-layer sparsity, one group per layer, one bar per model.

    ``tables`` maps a label (e.g. "before", "after") to rows with keys ``"name"`` and
    ``"sparsity"`` (fraction of zeros in [0, 1]), such as a sparsity table per model.
    """
    if not tables:
        raise ValueError("tables is empty: give at least one labelled list of rows")
    names: list[str] = []
    for rows in tables.values():
        names += [str(row["name"]) for row in rows if str(row["name"]) not in names]
    fig = new_figure((max(4.0, 0.45 * len(names) * max(1, len(tables)) ** 0.5 + 1.5), 2.8))
    ax = fig.subplots()
    width = 0.8 / len(tables)
    x = np.arange(len(names))
    for k, (label, rows) in enumerate(tables.items()):
        by_name = {str(row["name"]): float(row["sparsity"]) for row in rows}
        values = [by_name.get(name, np.nan) for name in names]
        ax.bar(x + (k - (len(tables) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, [_short_layer_name(name) for name in names], rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("sparsity (fraction of zeros)")
    ax.grid(axis="y", alpha=0.3)
    if len(tables) > 1:
        ax.legend(fontsize=8, ncols=min(len(tables), 4))
    if title:
        ax.set_title(title, fontweight="bold")
    return fig
