"""Tests of helpers.quant, with PyTorch's own modules and functions as the oracles."""

from __future__ import annotations

import copy
import io
import sys
import warnings
import zlib

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.ao.quantization import MinMaxObserver, QConfig, QConfigMapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import helpers
from helpers import quant
from helpers.latency import LatencyResult
from helpers.models import VGG
from helpers.pruning import random_vgg

TINY_ARCH = (8, 16, "M", 16, "M")


def _qconfig() -> QConfig:
    return QConfig(
        activation=MinMaxObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=127),
        weight=MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
    )


def _int8(model: nn.Module, seed: int = 0) -> torch.fx.GraphModule:
    """``model`` quantized with FX (engine x86 or fbgemm), calibrated on two random batches."""
    quant.select_quantized_engine()
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.rand(4, 3, 32, 32, generator=gen) for _ in range(2)]
    with quant.quantization_warnings_silenced():
        prepared = prepare_fx(
            copy.deepcopy(model).eval(),
            QConfigMapping().set_global(_qconfig()),
            example_inputs=(batches[0],),
        )
        with torch.no_grad():
            for x in batches:
                prepared(x)
        return convert_fx(prepared)


# ----------------------------------------------------------------------------- sizes


def test_state_dict_bytes_is_the_saved_file_size(tmp_path):
    """Is state_dict_bytes exactly the size of the file torch.save writes, for a model or a dict?"""
    model = random_vgg(TINY_ARCH, seed=1)
    # torch.save names the records inside the zip after the file ("archive" for a buffer), so
    # the sizes match exactly for a file named archive.pth (tens of bytes per tensor apart
    # otherwise).
    path = tmp_path / "archive.pth"
    torch.save(model.state_dict(), path)
    assert quant.state_dict_bytes(model) == path.stat().st_size
    assert quant.state_dict_bytes(model.state_dict()) == path.stat().st_size


def test_state_dict_bytes_compressed_is_zlib_of_the_file():
    """Does compress=True give the zlib size of the saved bytes, smaller when weights are zero?"""
    model = random_vgg(TINY_ARCH, seed=2)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert quant.state_dict_bytes(model, compress=True) == len(zlib.compress(buffer.getvalue(), 6))
    dense = quant.state_dict_bytes(model, compress=True)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight[: module.weight.shape[0] // 2 + 1] = 0
    assert quant.state_dict_bytes(model, compress=True) < dense
    assert quant.state_dict_bytes(model) == len(buffer.getvalue())  # same shapes, same size


def test_int8_state_dict_is_about_a_quarter():
    """Is an FX int8 model's saved state dict much smaller than the fp32 one?"""
    model = random_vgg((16, 32, "M", 32, "M"), seed=3)
    ratio = quant.state_dict_bytes(_int8(model)) / quant.state_dict_bytes(model)
    assert 0.2 < ratio < 0.5


class _Functional(nn.Module):
    """A module whose forward reads parameters directly (get_attr nodes when traced)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 4))
        self.register_buffer("offset", torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t() + self.offset


def test_graph_state_dict_lists_get_attr_tensors():
    """Does graph_state_dict return exactly the tensors of the graph's get_attr nodes?"""
    traced = torch.fx.symbolic_trace(_Functional())
    oracle = {str(n.target) for n in traced.graph.nodes if n.op == "get_attr"}
    tensors = quant.graph_state_dict(traced)
    assert set(tensors) == oracle == {"weight", "offset"}
    assert tensors["weight"] is traced.weight


def test_drop_unused_tensors_keeps_outputs():
    """Does drop_unused_tensors remove only unread tensors, leaving the outputs unchanged?"""
    traced = torch.fx.symbolic_trace(_Functional())
    traced.register_parameter("unused", nn.Parameter(torch.randn(5)))  # as convert_pt2e leaves
    x = torch.randn(2, 4)
    before = traced(x)
    assert quant.drop_unused_tensors(traced) == ["unused"]
    assert set(traced.state_dict()) == {"weight", "offset"}
    assert torch.equal(traced(x), before)


def test_graph_tensors_of_called_modules_are_kept():
    """An FX graph that calls modules (a symbolically traced VGG; an FX int8 model with its
    classifier left in fp32, a common choice) reads their weights through ``call_module``:
    graph_state_dict has them all (oracle: ``state_dict()``), drop_unused_tensors drops none,
    and the outputs do not change."""
    x = torch.rand(2, 3, 32, 32)
    traced = torch.fx.symbolic_trace(random_vgg(TINY_ARCH, seed=1).eval())
    assert set(quant.graph_state_dict(traced)) == set(traced.state_dict())
    before = traced(x)
    assert quant.drop_unused_tensors(traced) == []
    assert torch.equal(traced(x), before)
    quant.select_quantized_engine()
    with quant.quantization_warnings_silenced():
        mapping = QConfigMapping().set_global(_qconfig()).set_module_name("classifier", None)
        prepared = prepare_fx(random_vgg(TINY_ARCH, seed=1).eval(), mapping, example_inputs=(x,))
        prepared(x)
        int8 = convert_fx(prepared)
    assert isinstance(int8.classifier, nn.Linear)  # fp32, called as a module
    before = int8(x)
    assert quant.drop_unused_tensors(int8) == []
    assert torch.equal(int8(x), before)
    assert {"classifier.weight", "classifier.bias"} <= set(quant.graph_state_dict(int8))


def _pt2e(model: nn.Module, x: torch.Tensor, configured: bool = True) -> torch.fx.GraphModule:
    """``model`` exported as Lab 3 does (strict), prepared with the x86 quantizer (with its
    default config, or none: a quantizer that annotates nothing), calibrated on ``x``, converted."""
    status = quant.torchao_status()
    if not status.available:
        pytest.skip(status.message)
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    exported = torch.export.export(model, (x,), strict=True).module()
    quantizer = xiq.X86InductorQuantizer()
    if configured:
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    prepared(x)
    return convert_pt2e(prepared)


def test_pt2e_converted_model_carries_unused_fp32_weights():
    """After convert_pt2e, is state_dict() bigger than the graph's tensors, and fixed by dropping?"""
    x = torch.rand(2, 3, 32, 32)
    converted = _pt2e(random_vgg(TINY_ARCH, seed=4), x)
    used = quant.graph_state_dict(converted)
    assert any(t.dtype == torch.int8 for t in used.values())
    assert quant.state_dict_bytes(converted) > quant.state_dict_bytes(used)
    out = converted(x)
    dropped = quant.drop_unused_tensors(converted)
    assert dropped and all(name not in used for name in dropped)
    assert torch.equal(converted(x), out)
    assert set(converted.state_dict()) <= set(used)


def test_pt2e_quantize_steps_counts_the_quantize_nodes():
    """Does it count the graph's quantize_per_tensor/per_channel calls, by the ops themselves?"""
    converted = _pt2e(random_vgg(TINY_ARCH, seed=5), torch.rand(2, 3, 32, 32))
    ops = torch.ops.quantized_decomposed
    expected = sum(
        node.target in (ops.quantize_per_tensor.default, ops.quantize_per_channel.default)
        for node in converted.graph.nodes
    )
    assert expected > 0  # the strict export lets the quantizer find every layer
    assert quant.pt2e_quantize_steps(converted) == expected


def test_pt2e_quantize_steps_refuses_a_model_nothing_was_quantized_in():
    """A quantizer that matched nothing leaves the fp32 model: is that an error, not int8?"""
    model = random_vgg(TINY_ARCH, seed=6)
    x = torch.rand(2, 3, 32, 32)
    converted = _pt2e(model, x, configured=False)
    assert torch.allclose(converted(x), model(x), atol=1e-5)  # the fp32 model, unchanged
    with pytest.raises(RuntimeError, match=r"quantized nothing.*strict=True"):
        quant.pt2e_quantize_steps(converted)


# ----------------------------------------------------------------------------- backend


def test_select_quantized_engine_sets_a_supported_engine():
    """Does it set torch.backends.quantized.engine to the first supported preference?"""
    saved = torch.backends.quantized.engine
    try:
        supported = torch.backends.quantized.supported_engines
        expected = next(e for e in quant.ENGINE_PREFERENCE if e in supported)
        assert quant.select_quantized_engine() == expected
        assert torch.backends.quantized.engine == expected
        with pytest.raises(RuntimeError, match="no-such-engine"):
            quant.select_quantized_engine(("no-such-engine",))
    finally:
        torch.backends.quantized.engine = saved


def test_cpu_capability_is_text():
    """Does cpu_capability name PyTorch's CPU instruction set?"""
    assert quant.cpu_capability() == str(torch.backends.cpu.get_cpu_capability())


def test_cpu_has_vnni_asks_pytorch_and_says_none_when_it_cannot(monkeypatch):
    """Is the answer PyTorch's own (a bool), and None once its private check is gone?"""
    assert quant.cpu_has_vnni() is bool(torch.cpu._is_vnni_supported())
    monkeypatch.delattr(torch.cpu, "_is_vnni_supported")
    assert quant.cpu_has_vnni() is None


def test_torchao_status_reports_a_missing_torchao(monkeypatch):
    """With torchao unimportable, is it reported unavailable with the install command?"""
    monkeypatch.setitem(sys.modules, "torchao", None)  # makes `import torchao` fail
    status = quant.torchao_status()
    assert not status.available and status.version is None
    assert quant.TORCHAO_INSTALL in status.message and "skipped" in status.message


def test_torchao_status_on_an_old_torch_says_to_upgrade_torch(monkeypatch):
    """Where torchao fails because torch is too old, is the advice to upgrade torch?"""
    monkeypatch.setitem(sys.modules, "torchao", None)
    monkeypatch.setattr(torch, "__version__", "2.2.2+cu121")
    status = quant.torchao_status()
    assert not status.available
    minimum = ".".join(map(str, helpers.MIN_TORCH))
    assert f"pip install 'torch>={minimum}'" in status.message
    assert quant.TORCHAO_INSTALL not in status.message  # reinstalling torchao would not help


def test_torchao_status_matches_import():
    """Is torchao reported available exactly when its PT2E entry points import?"""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e  # noqa: F401

        importable = True
    except Exception:
        importable = False
    status = quant.torchao_status()
    assert status.available == importable
    if importable:
        import torchao

        assert status.version == torchao.__version__


# ----------------------------------------------------------------------------- warnings


def _warn(message: str, category: type[Warning]) -> None:
    warnings.warn(message, category, stacklevel=2)


def test_silenced_context_hides_only_known_warnings():
    """Are the known messages hidden (even under an error filter) and others still shown?"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error")
        with quant.quantization_warnings_silenced():
            _warn("torch.ao.quantization is deprecated and will be removed", DeprecationWarning)
            _warn(
                "Please use quant_min and quant_max to specify the range for observers.",
                UserWarning,
            )
            warnings.simplefilter("always", UserWarning)  # inner change, undone on exit
        warnings.simplefilter("always")
        with quant.quantization_warnings_silenced():
            _warn("must run observer before calling calculate_qparams", UserWarning)
    assert [str(w.message) for w in caught] == [
        "must run observer before calling calculate_qparams"
    ]


def test_silenced_context_hides_prepare_fx_deprecation():
    """Does prepare_fx's real DeprecationWarning disappear inside the context?"""
    model = random_vgg(TINY_ARCH, seed=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quant.quantization_warnings_silenced():
            prepare_fx(model, QConfigMapping().set_global(_qconfig()), (torch.rand(1, 3, 32, 32),))
    assert not [w for w in caught if "torch.ao.quantization is deprecated" in str(w.message)]


def test_filter_quantization_warnings_installs_filters(capsys):
    """Does the global filter hide the known messages and print what it hides?"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lines = quant.filter_quantization_warnings()
        _warn("torch.ao.quantization is deprecated", DeprecationWarning)
        _warn("TypedStorage is deprecated", UserWarning)
        _warn("something else", UserWarning)
    assert [str(w.message) for w in caught] == ["something else"]
    assert len(lines) == len(quant.KNOWN_WARNINGS)
    assert "not an error" in capsys.readouterr().out


def test_describe_warnings_counts_repeats():
    """Is each distinct warning listed once, with its count?"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            _warn("first line\nsecond line", DeprecationWarning)
        _warn("other", UserWarning)
    assert quant.describe_warnings(caught) == [
        "DeprecationWarning: first line  (x3)",
        "UserWarning: other",
    ]


# ----------------------------------------------------------------------------- modules


def test_quantized_module_names_of_an_fx_model():
    """Are the int8 modules those whose class PyTorch defines in its quantized packages?"""
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    int8 = _int8(random_vgg(TINY_ARCH, seed=6))
    oracle = {
        name: type(m).__name__
        for name, m in int8.named_modules()
        if isinstance(m, nnq.Conv2d | nnq.Linear | nniq.ConvReLU2d)
    }
    assert quant.quantized_module_names(int8) == oracle
    assert set(oracle) == {"backbone.conv0", "backbone.conv1", "backbone.conv2", "classifier"}
    assert quant.quantized_module_names(random_vgg(TINY_ARCH)) == {}


def test_quantized_weight_sparsity_keeps_pruned_zeros():
    """Do symmetric int8 weights keep the zeros of a pruned model (oracle: int_repr counts)?"""
    model = random_vgg(TINY_ARCH, seed=7)
    with torch.no_grad():
        model.backbone.conv1.weight[:8] = 0  # half of conv1's filters
    int8 = _int8(model)
    weights = [
        int8.get_submodule(name).weight().int_repr() for name in quant.quantized_module_names(int8)
    ]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert quant.quantized_weight_sparsity(int8) == zeros / sum(w.numel() for w in weights)
    assert zeros >= 8 * 8 * 9
    assert quant.quantized_weight_sparsity(random_vgg(TINY_ARCH)) == 0.0


def test_quantized_weight_sparsity_counts_the_zero_point_of_affine_weights():
    """Affine int8 weights store 0.0 as their zero point, not as the integer 0: are the pruned
    weights counted (oracle: the weights that round to 0 at the scale, each of which is stored
    as the zero point), where counting integer zeros would miss them?"""
    quant.select_quantized_engine()
    weight = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    weight[:, :, 1] = 0  # a third of the weights pruned
    conv = torch.ao.nn.quantized.Conv2d(3, 8, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantize_per_tensor's deprecation
        conv.set_weight_bias(torch.quantize_per_tensor(weight, 0.02, 5, torch.qint8), None)
    model = nn.Sequential(conv)
    stored_as_zero = (torch.round(weight / 0.02) == 0).float().mean()  # the pruned, and tiny ones
    assert stored_as_zero >= 1 / 3
    assert quant.quantized_weight_sparsity(model) == pytest.approx(float(stored_as_zero))
    assert int((conv.weight().int_repr() == 0).sum()) < weight.numel() / 3  # integer zeros


def test_module_device():
    """Is the device that of the first parameter, else buffer, else the CPU?"""
    assert quant.module_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert quant.module_device(nn.ReLU()) == torch.device("cpu")
    assert quant.module_device(nn.BatchNorm1d(3, affine=False)) == torch.device("cpu")
    assert quant.module_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")


# ----------------------------------------------------------------------------- latency


def test_latency_by_batch_shape_and_counts():
    """One LatencyResult per model and batch size, with fewer timed calls for big batches?"""
    models = {"a": VGG(TINY_ARCH).eval(), "b": _int8(random_vgg(TINY_ARCH))}
    result = quant.latency_by_batch(models, (1, 4), num_threads=1, n_warmup=1, n_test=8)
    assert set(result) == {"a", "b"}
    for per_batch in result.values():
        assert set(per_batch) == {1, 4}
        assert all(isinstance(r, LatencyResult) for r in per_batch.values())
        assert per_batch[1].n == 8 and per_batch[4].n == 3
        assert per_batch[1].num_threads == 1


# ----------------------------------------------------------------------------- display


def test_format_table_aligns_columns():
    """Are columns in first-appearance order, numbers right-aligned, missing keys blank?"""
    rows = [{"name": "conv0", "zeros": 1234}, {"name": "classifier", "sparsity": 0.5}]
    lines = quant.format_table(rows).splitlines()
    assert lines[0].split() == ["name", "zeros", "sparsity"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].startswith("conv0 ") and "1,234" in lines[2]
    assert lines[3].rstrip().endswith("0.5")
    assert len({len(line) for line in lines[:2]}) == 1
    assert quant.format_table([]) == "(no rows)"


def test_plot_layer_sparsity_one_bar_per_layer_and_model():
    """Does the figure hold one bar group per model, one bar per layer, heights = sparsity?"""
    before = [
        {"name": "backbone.conv0.weight", "sparsity": 0.0},
        {"name": "classifier.weight", "sparsity": 0.1},
    ]
    after = [
        {"name": "backbone.conv0.weight", "sparsity": 0.5},
        {"name": "classifier.weight", "sparsity": 0.9},
    ]
    fig = quant.plot_layer_sparsity({"before": before, "after": after}, title="t")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.containers) == 2
    assert [bar.get_height() for bar in ax.containers[1]] == [0.5, 0.9]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv0", "classifier"]
    with pytest.raises(ValueError):
        quant.plot_layer_sparsity({})
