"""Does the judge take only data from the student's kernel, and grade it the way tests expect?

These tests drive ``autograder.judge_runtime`` against a real student kernel (an ipykernel
started here) with the judge in this process. Whatever runs in the student's kernel, the
judge's own ``torch``, builtins and asserts are untouched, and nothing the student's kernel
sends back can run code here.
"""

from __future__ import annotations

import copy
import json
import os
import textwrap
import types
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune as prune
from jupyter_client import KernelManager
from torch import nn
from toy import TOY_ROOT

from autograder import grade
from autograder import judge_runtime as jr
from autograder.course import Course
from autograder.execute import JUDGE_DIED_GUESS, Limits, kernel_env
from helpers.pruning import random_vgg

REPO = Path(__file__).resolve().parent.parent
SMALL = (8, 16, "M", 16, "M")

pytestmark = pytest.mark.timeout(300)


class Student:
    """A student kernel and a judge connected to it (fresh names on every ``judge()``)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        (tmp / "rpc").mkdir(parents=True, exist_ok=True)
        env = kernel_env({"PYTHONPATH": str(REPO), "HOME": str(tmp)})
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env, cwd=str(tmp))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def run(self, code: str) -> None:
        """Run ``code`` in the student's kernel (it must not fail)."""
        reply = self.kc.execute_interactive(textwrap.dedent(code), timeout=120, output_hook=id)
        assert reply["content"]["status"] == "ok", reply["content"]

    def judge(self, names: list[str], judge_code: str = "", cell_timeout: float = 60):
        """A judge bound to ``names``; ``judge_code`` runs first in its (trusted) namespace."""
        namespace: dict = {"__name__": "__main__"}
        exec(textwrap.dedent(judge_code), namespace)  # test classes live in "__main__"
        info = self.km.get_connection_info()
        environ = {
            jr.STUDENT_CONNECTION: json.dumps(
                {k: v.decode() if isinstance(v, bytes) else v for k, v in info.items()}
            ),
            jr.STUDENT_PID: str(self.km.provisioner.process.pid),
            jr.RPC_DIR: str(self.tmp / "rpc"),
            jr.RPC_ID: "{0.st_dev}:{0.st_ino}".format((self.tmp / "rpc").stat()),
            jr.STUDENT_NAMES: json.dumps(names),
            jr.CELL_TIMEOUT: str(cell_timeout),
        }
        saved = {key: os.environ.get(key) for key in environ}
        os.environ.update(environ)
        try:
            judge = jr._Judge(types.SimpleNamespace(user_ns=namespace))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        judge.sync()
        return judge, namespace

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    kernel = Student(tmp_path_factory.mktemp("student"))
    kernel.run(
        """
        import os, torch
        import torch.nn.utils.prune as prune
        from torch import nn

        def fine_grained_prune(tensor, sparsity):
            num_zeros = round(tensor.numel() * sparsity)
            threshold = tensor.abs().flatten().kthvalue(num_zeros).values
            mask = tensor.abs() > threshold
            tensor.mul_(mask)
            return mask

        def prune_by_rebinding(tensor, sparsity):  # a common mistake: swaps the memory
            num_zeros = round(tensor.numel() * sparsity)
            threshold = tensor.abs().flatten().kthvalue(num_zeros).values
            mask = tensor.abs() > threshold
            tensor.data = tensor * mask
            return tensor

        def prune_layer(model):
            prune.l1_unstructured(model.backbone.conv1, "weight", amount=0.5)
            return model

        def run_recorder(recorder, x):
            recorder(x)
            recorder(x + 1)
            return len(recorder.calls)

        def outer():
            return inner()

        def inner():
            return "student"

        def fails(kind):
            if kind == "todo":
                raise NotImplementedError("not answered")
            if kind == "value":
                raise ValueError("bad sparsity 1.5")
            raise torch.linalg.LinAlgError("singular")

        sparsity_dict = {"backbone.conv0.weight": 0.5}
        """
    )
    yield kernel
    kernel.close()


def test_proxy_prunes_in_place_and_returns_the_mask(student):
    """Does a call change the caller's tensor in place (through a view too) and return data?"""
    judge, ns = student.judge(["fine_grained_prune"])
    weight = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    original = weight.clone()
    mask = ns["fine_grained_prune"](weight, 0.6)
    oracle = original.abs() > sorted(original.abs().flatten().tolist())[17]
    assert torch.equal(mask, oracle) and torch.equal(weight, original * oracle)
    param = nn.Parameter(original.clone())
    ns["fine_grained_prune"](param.detach(), 0.6)  # as FineGrainedPruner calls it
    assert torch.equal(param.detach(), original * oracle)


def test_a_tensor_whose_memory_the_student_swapped_is_rebound_not_copied_into(student):
    """``tensor.data = tensor * mask`` in the student's function: as in one process, does the
    tensor given see the new values (and come back as the result, the same object) while a
    parameter whose ``detach()`` was given keeps its old values, by position and by keyword?
    (Copied into the old memory instead, the parameter would look pruned: a false pass of
    Lab 1's check that prunes ``param.detach()``.)"""
    judge, ns = student.judge(["prune_by_rebinding"])
    weight = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    original = weight.clone()
    oracle = original.abs() > sorted(original.abs().flatten().tolist())[17]
    returned = ns["prune_by_rebinding"](weight, 0.6)
    assert returned is weight and torch.equal(weight, original * oracle)
    param = nn.Parameter(original.clone())
    ns["prune_by_rebinding"](param.detach(), 0.6)
    assert torch.equal(param.detach(), original)
    ns["prune_by_rebinding"](tensor=param.detach(), sparsity=0.6)
    assert torch.equal(param.detach(), original)


def test_values_are_copied_not_proxied(student):
    """Is a non-callable name (sparsity_dict) bound as a plain copy of its value?"""
    judge, ns = student.judge(["sparsity_dict", "not_defined_anywhere"])
    assert ns["sparsity_dict"] == {"backbone.conv0.weight": 0.5}
    assert "not_defined_anywhere" not in ns


def test_monkeypatching_the_student_kernel_changes_nothing_in_the_judge(tmp_path):
    """Do patched builtins, torch, numpy and input transformers in the student's kernel
    leave the judge's checks and the returned data alone?"""
    kernel = Student(tmp_path)
    try:
        kernel.run(
            """
            import builtins, numpy, numpy.testing, torch
            builtins.abs = lambda x: 0
            torch.allclose = lambda *a, **k: True
            torch.equal = lambda *a, **k: True
            numpy.testing.assert_allclose = lambda *a, **k: None
            get_ipython().input_transformers_cleanup.append(
                lambda lines: [l for l in lines if "assert" not in l])

            def double(x):
                return x * 3  # wrong
            """
        )
        judge, ns = kernel.judge(["double"])
        result = ns["double"](torch.ones(2))
        assert not torch.equal(result, torch.ones(2) * 2)
        assert not torch.allclose(torch.zeros(1), torch.ones(1)) and abs(-2) == 2
        with pytest.raises(AssertionError):
            assert torch.equal(result, torch.ones(2) * 2)
    finally:
        kernel.close()


def test_modules_keep_their_identity_hooks_and_submodules(student):
    """Does an in-place pruning function leave the caller's model pruned, the same object?"""
    judge, ns = student.judge(["prune_layer"])
    model = random_vgg(SMALL, seed=3)
    conv = model.backbone.conv1
    expected = prune.l1_unstructured(copy.deepcopy(model).backbone.conv1, "weight", amount=0.5)
    result = ns["prune_layer"](model)
    assert result is model and model.backbone.conv1 is conv
    assert prune.is_pruned(model) and hasattr(conv, "weight_mask")
    assert torch.equal(conv.weight, expected.weight)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)  # the restored pre-forward hook works


def test_classes_defined_by_a_test_travel_and_come_back(student):
    """Does an object of a test's own class come back with what the student's code did to it?"""
    code = """
    import torch
    from torch import nn

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = []

        def forward(self, x):
            self.calls.append((self.training, x))
            return x
    """
    judge, ns = student.judge(["run_recorder"], code)
    recorder = ns["Recorder"]()
    x = torch.arange(3.0)
    assert ns["run_recorder"](recorder, x) == 2
    assert [torch.equal(c[1], v) for c, v in zip(recorder.calls, (x, x + 1), strict=True)] == [
        True,
        True,
    ]


def test_student_exceptions_keep_their_type_and_message(student):
    """Does a student's exception reach the test as the nearest built-in type, message kept?"""
    judge, ns = student.judge(["fails"])
    with pytest.raises(NotImplementedError, match="not answered"):
        ns["fails"]("todo")
    with pytest.raises(ValueError, match="bad sparsity 1.5"):
        ns["fails"]("value")
    with pytest.raises(RuntimeError, match="LinAlgError: singular"):
        ns["fails"]("linalg")


def test_a_students_own_keyboard_interrupt_is_an_error_not_a_timeout(student):
    """A KeyboardInterrupt the student's function raises itself (no time limit near) reaches
    the test as an error naming it, not as the judge's StudentTimeout: a timeout would mark
    the run as out of time, and a later grade with a higher limit would regrade it."""
    student.run("def interrupts():\n    raise KeyboardInterrupt('pressed')\n")
    judge, ns = student.judge(["interrupts"])
    with pytest.raises(Exception, match="KeyboardInterrupt: pressed") as caught:
        ns["interrupts"]()
    assert not isinstance(caught.value, TimeoutError | jr.StudentTimeout)


def test_a_value_the_grader_refuses_says_so_where_it_is_used(student):
    """A defined value of a type the allow-lists refuse (a float subclass whose == is always
    True) is not bound as itself, and is not missing either (NameError would say "define
    it"): each use in a test raises TypeError saying it could not be taken, and why."""
    student.run(
        """
        class Anything(float):
            def __eq__(self, other):
                return True
        target_sparsity_refused = Anything(0.1)
        """
    )
    judge, ns = student.judge(["target_sparsity_refused", "sparsity_dict"])
    assert ns["sparsity_dict"] == {"backbone.conv0.weight": 0.5}  # the others are bound
    value = ns["target_sparsity_refused"]
    assert type(value) is jr._Refused
    why = (
        r"^your target_sparsity_refused could not be taken for grading: target_sparsity_refused "
        r"holds an object the grader does not accept back \(type __main__\.Anything is not "
        r"accepted\); only tensors"
    )
    for use in (
        lambda: value == 0.6,
        lambda: isinstance(value, int | float),
        lambda: 0 <= value <= 1,
        lambda: abs(value - 0.6),
        lambda: float(value),
        lambda: value.keys(),
        lambda: f"{value:.2f}",
    ):
        with pytest.raises(TypeError, match=why):
            use()
    assert "could not be taken" in repr(value)
    assert jr._test_classes(ns) == []  # the judge's own look at the names does not fail


def test_a_request_folder_replaced_by_a_link_is_refused_and_nothing_is_written_there(tmp_path):
    """The student's code renames the judge's request folder and puts a link to another
    folder in its place: the judge creates and deletes nothing there (it would as the
    grader's user), and every later test fails saying why."""
    kernel = Student(tmp_path / "student")
    try:
        kernel.run("def double(x):\n    return 2 * x\n")
        judge, ns = kernel.judge(["double"])
        assert ns["double"](4) == 8
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        rpc = tmp_path / "student" / "rpc"
        kernel.run(
            f"import os\nos.rename({str(rpc)!r}, {str(rpc)!r} + '-old')\n"
            f"os.symlink({str(elsewhere)!r}, {str(rpc)!r})\n"
        )
        with pytest.raises(jr.StudentKernelError, match="request folder .* was replaced") as caught:
            ns["double"](4)
        # not a RuntimeError: tests catch those from a student's function to explain them;
        # graded as tampered by this name
        assert not isinstance(caught.value, RuntimeError)
        assert type(caught.value).__name__ == grade.TAMPERED_ERROR
        assert list(elsewhere.iterdir()) == []
        with pytest.raises(jr.GraderFilesTampered, match="was replaced"):
            ns["double"](5)  # and it stays refused
    finally:
        kernel.close()


def test_the_judge_connects_without_the_students_connection_file(tmp_path):
    """The student's code removes its kernel's connection file (it lies in the student's
    folder) before the judge connects: the judge connects all the same, from the connection
    info the grader hands it, and its calls work (no grader failure to regrade forever)."""
    kernel = Student(tmp_path / "student")
    try:
        kernel.run(
            "import os\nfrom ipykernel.connect import get_connection_file\n"
            "os.remove(get_connection_file())\ndef double(x):\n    return 2 * x\n"
        )
        assert not Path(kernel.km.connection_file).exists()
        judge, ns = kernel.judge(["double"])
        assert ns["double"](21) == 42
    finally:
        kernel.close()


def test_the_graders_folder_id_is_the_one_the_judge_checks(tmp_path):
    """grade.judge_spec writes the request folder's id; the judge (a copy of its own file,
    not importing grade) checks it: do the two agree on the format, accepting the folder
    and refusing one put in its place?"""
    lab = Course(root=TOY_ROOT, release_dir=TOY_ROOT, student_files=()).load("toy")
    rpc = tmp_path / "rpc"
    rpc.mkdir()
    extra = {"PYTHONPATH": str(tmp_path)}
    spec = grade.judge_spec(lab, frozenset(), tmp_path, extra, rpc, Limits(), "smoke")
    judge = object.__new__(jr._Judge)
    judge.rpc_dir, judge.rpc_id, judge.dead = rpc, spec.env[jr.RPC_ID], None
    os.close(judge._rpc_folder())  # the folder itself: accepted
    rpc.rename(tmp_path / "old")
    rpc.mkdir()
    with pytest.raises(jr.GraderFilesTampered, match="was replaced"):
        judge._rpc_folder()


def test_a_tests_own_functions_never_reach_the_student_kernel(student):
    """Does rebinding a student's name in the judge leave the student's kernel alone?"""
    judge, ns = student.judge(["outer", "inner"], "def reference_inner():\n    return 'ref'\n")
    ns["inner"] = ns["reference_inner"]
    assert ns["outer"]() == "student"  # the student's outer calls the student's inner
    assert ns["inner"]() == "ref"


def test_graph_modules_come_back_rebuilt_and_equal(student):
    """Does an FX-quantized model returned by the student compute what it computed there?"""
    student.run(
        """
        import copy
        from torch.ao.quantization import QConfigMapping, get_default_qconfig
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        def quantize(model, batches):
            prepared = prepare_fx(copy.deepcopy(model).eval(),
                                  QConfigMapping().set_global(get_default_qconfig("x86")),
                                  example_inputs=(batches[0][:1],))
            with torch.no_grad():
                for x in batches:
                    prepared(x)
            return convert_fx(prepared), prepared
        """
    )
    judge, ns = student.judge(["quantize"])
    model = random_vgg(SMALL, seed=5)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.rand(4, 3, 32, 32, generator=gen) for _ in range(2)]
    int8, prepared = ns["quantize"](model, batches)
    assert isinstance(int8, torch.fx.GraphModule) and isinstance(prepared, torch.fx.GraphModule)
    from torch.ao.quantization import QConfigMapping, get_default_qconfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    reference = prepare_fx(
        copy.deepcopy(model).eval(),
        QConfigMapping().set_global(get_default_qconfig("x86")),
        example_inputs=(batches[0][:1],),
    )
    with torch.no_grad():
        for x in batches:
            reference(x)
        reference = convert_fx(reference)
        assert torch.equal(int8(batches[1]), reference(batches[1]))


def test_nothing_sent_back_can_run_code_in_the_judge(student, tmp_path):
    """Is a response that would call os.system, or a student's own class, refused?"""
    marker = tmp_path / "pwned"
    student.run(
        f"""
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))

        class MyNet(nn.Module):
            pass

        def evil():
            return Evil()

        def own_class():
            return MyNet()
        """
    )
    judge, ns = student.judge(["evil", "own_class"])
    with pytest.raises(TypeError, match="does not accept back .*posix.system"):
        ns["evil"]()
    with pytest.raises(TypeError, match="does not accept back .*MyNet"):
        ns["own_class"]()
    assert not marker.exists()


@pytest.mark.parametrize(
    "node",
    [
        ("call_function", "y", ("builtins", "eval"), (("__node__", "x"),), {}),
        ("call_function", "y", ("torch", "load"), (("__node__", "x"),), {}),
        ("call_method", "y", "__class__", (("__node__", "x"),), {}),
        ("get_attr", "y", "__dict__", (), {}),
    ],
)
def test_graphs_with_unsafe_targets_are_refused(node):
    """Does rebuilding a graph refuse eval, torch.load, dunder methods and attributes?"""
    nodes = [
        ("placeholder", "x", "x", (), {}),
        node,
        ("output", "output", "output", (("__node__", "y"),), {}),
    ]
    with pytest.raises(ValueError, match="not allowed"):
        jr.build_graph_module(nodes, {}, {}, False)


def test_an_infinite_loop_is_stopped_and_the_kernel_answers_again(tmp_path):
    """Does a call past the time limit fail with TimeoutError and leave the kernel usable?"""
    kernel = Student(tmp_path)
    try:
        kernel.run("def spin():\n    while True:\n        pass\n\ndef one():\n    return 1\n")
        judge, ns = kernel.judge(["spin", "one"], cell_timeout=15)
        with pytest.raises(TimeoutError, match="did not return within"):
            ns["spin"]()
        judge.sync()  # a new cell: a new time budget
        assert ns["one"]() == 1
    finally:
        kernel.close()


def test_a_dead_kernel_fails_every_later_call(tmp_path):
    """Does os._exit in the student's function fail that call and every later one quickly?"""
    kernel = Student(tmp_path)
    try:
        kernel.run("import os\n\ndef die():\n    os._exit(1)\n\ndef one():\n    return 1\n")
        judge, ns = kernel.judge(["die", "one"])
        with pytest.raises(jr.StudentKernelError, match="died") as died:
            ns["die"]()
        with pytest.raises(jr.StudentKernelError, match="died"):
            ns["one"]()
        # the guess the grader replaces with the cause it reads from the exit status
        assert str(died.value).startswith(
            "the student's kernel died while running die" + JUDGE_DIED_GUESS
        )
    finally:
        kernel.close()


def test_a_request_that_fails_in_the_students_kernel_says_with_what(tmp_path):
    """When the grader's own request code fails in the student's kernel (here its pickle.load
    replaced; under torch 2.10's CUDA build, importing torch past the memory cap), the error
    is named, and one of memory comes with a hint at the cap."""
    kernel = Student(tmp_path)
    try:
        kernel.run("def one():\n    return 1\n")
        judge, ns = kernel.judge(["one"])
        assert ns["one"]() == 1
        kernel.run(
            "import pickle\n"
            "def refuse(*args, **kwargs):\n    raise OSError('no reading today')\n"
            "pickle.load = refuse\n"
        )
        with pytest.raises(jr.StudentKernelError) as refused:
            ns["one"]()
        assert str(refused.value) == (
            "the student's kernel sent no answer for one (the grader's request failed there "
            "with OSError: no reading today)"
        )
        kernel.run(
            "def refuse(*args, **kwargs):\n    raise MemoryError('cannot allocate')\n"
            "pickle.load = refuse\n"
        )
        with pytest.raises(jr.StudentKernelError, match=r"MemoryError: cannot allocate; out of"):
            ns["one"]()
    finally:
        kernel.close()


def test_prepared_fx_models_pickle_where_torch_trips_on_string_globals(monkeypatch):
    """With PyTorch 2.11's import block (it asks a string global for its __name__), does the
    judge's fix let a prepared FX model travel, and arrive computing the same?"""
    import cloudpickle
    from torch.ao.quantization import QConfigMapping, get_default_qconfig
    from torch.ao.quantization.quantize_fx import prepare_fx
    from torch.fx import graph_module

    def block_of_torch_2_11(globals_, importer):
        lines = {graph_module._format_import_statement(n, v, importer) for n, v in globals_.items()}
        return "\n".join(sorted(lines))

    monkeypatch.setattr(graph_module, "_format_import_block", block_of_torch_2_11)
    model = random_vgg(SMALL, seed=8).eval()
    x = torch.rand(2, 3, 32, 32)
    mapping = QConfigMapping().set_global(get_default_qconfig("x86"))
    prepared = prepare_fx(model, mapping, example_inputs=(x[:1],))
    assert any(isinstance(v, str) for v in prepared.graph.python_code("self").globals.values())
    with pytest.raises(AttributeError):
        cloudpickle.dumps(prepared)
    assert jr.pickle_graph_modules_with_string_globals()
    arrived = cloudpickle.loads(cloudpickle.dumps(prepared))
    assert torch.equal(arrived(x), prepared(x))
    assert not jr.pickle_graph_modules_with_string_globals()  # fixed: not wrapped twice


def test_a_calibrated_prepared_model_can_still_be_converted(student):
    """After the student's calibrate, is the caller's prepared model convertible, observers set?"""
    student.run(
        """
        def calibrate(model, batches, num_batches):
            model.eval()
            with torch.no_grad():
                for x in batches[:num_batches]:
                    model(x)
            return num_batches
        """
    )
    from torch.ao.quantization import QConfigMapping, get_default_qconfig
    from torch.ao.quantization.observer import ObserverBase
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    judge, ns = student.judge(["calibrate"])
    gen = torch.Generator().manual_seed(2)
    batches = [torch.rand(4, 3, 32, 32, generator=gen) * (1 + i) for i in range(3)]
    mapping = QConfigMapping().set_global(get_default_qconfig("x86"))
    model = random_vgg(SMALL, seed=7).eval()
    mine = prepare_fx(copy.deepcopy(model), mapping, example_inputs=(batches[0][:1],))
    reference = prepare_fx(copy.deepcopy(model), mapping, example_inputs=(batches[0][:1],))
    assert ns["calibrate"](mine, batches, 2) == 2
    with torch.no_grad():
        for x in batches[:2]:
            reference(x)
    observers = [
        (a, b)
        for (_, a), (_, b) in zip(mine.named_modules(), reference.named_modules(), strict=True)
        if isinstance(a, ObserverBase)
    ]
    assert observers and all(
        torch.equal(x, y)
        for a, b in observers
        for x, y in zip(a.buffers(), b.buffers(), strict=True)
    )
    with torch.no_grad():
        assert torch.equal(convert_fx(mine)(batches[2]), convert_fx(reference)(batches[2]))
