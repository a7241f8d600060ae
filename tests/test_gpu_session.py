"""benchmarks/gpu_session.py: does a short GPU lease run its steps within the budget, bring
back the checkpoint intact, and carry every package the notebooks need?"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import gpu_session  # noqa: E402
from dense_recipes import finished_run, recipe_for  # noqa: E402
from gpu_session import (  # noqa: E402
    GPU_IMAGE_PACKAGES,
    Step,
    lab_outputs,
    normalize,
    requirements_closure,
    run_session,
    session_steps,
    target_environment,
    wheels_to_install,
    write_out,
)

import helpers.data  # noqa: E402
from helpers.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from helpers.models import VGG  # noqa: E402
from helpers.profiles import REPO_ROOT, SMALL_VGG_ARCH, get_profile  # noqa: E402
from helpers.train import default_dense_path, default_recipe, dense_config, train_dense  # noqa: E402

PY = sys.executable


pytestmark = pytest.mark.usefixtures("lab_data")  # its own LAB_DATA, the CPU (conftest)


def test_the_kit_carries_every_dependency_a_step_needs_that_the_image_lacks():
    """Is each of pyproject's dependencies in the GPU image, in the kit, or named as one no
    step imports? (torchao was missing: Lab 3 would have skipped PT2E on the GPU, silently.)"""
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {normalize(Requirement(line).name) for line in project["dependencies"]}
    env = target_environment("3.12")
    kit = set(requirements_closure(gpu_session.KIT_ROOTS, GPU_IMAGE_PACKAGES, env))
    missing = declared - GPU_IMAGE_PACKAGES - kit - gpu_session.NOT_ON_THE_GPU
    assert not missing, f"neither in the GPU image nor in the kit: {sorted(missing)}"
    assert not gpu_session.NOT_ON_THE_GPU - declared  # names only pyproject's dependencies


def test_kit_closure_holds_every_requirement_the_gpu_image_lacks():
    """Is every requirement of every kit package (markers for Python 3.12 on Linux) either in
    the kit or in the GPU image, and is nothing the image has (torch above all) carried?"""
    env = target_environment("3.12")
    found = requirements_closure(gpu_session.KIT_ROOTS, GPU_IMAGE_PACKAGES, env)
    assert {normalize(r) for r in gpu_session.KIT_ROOTS} <= set(found)
    assert not set(found) & GPU_IMAGE_PACKAGES
    import importlib.metadata

    for name in found:
        assert found[name], f"{name} is needed but not installed here, so no version to pin"
        for line in importlib.metadata.distribution(name).requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                dep = normalize(req.name)
                assert dep in found or dep in GPU_IMAGE_PACKAGES, f"{name} needs {dep}"


def test_only_missing_distributions_are_installed(tmp_path):
    wheels = [
        tmp_path / "numpy-2.0.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        tmp_path / "no_such_dist-1.0-py3-none-any.whl",
        tmp_path / "no_such_dist-1.1-py3-none-any.whl",
        tmp_path / "Other.Dist-2.0-py3-none-any.whl",
    ]
    chosen = wheels_to_install(wheels, gpu_session.is_installed)
    assert [w.name for w in chosen] == [
        "Other.Dist-2.0-py3-none-any.whl",
        "no_such_dist-1.0-py3-none-any.whl",
    ]


def with_a_child(pid_file: Path) -> str:
    """Code for a step that starts a child, writes the child's pid to ``pid_file``, sleeps."""
    return (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        f"open({str(pid_file)!r}, 'w').write(str(c.pid)); time.sleep(120)"
    )


def test_steps_run_in_order_within_the_budget(tmp_path, monkeypatch):
    """Exit codes, a timeout that stops the step's whole process group, budget and readiness
    skips, a satisfied step not run, packing after every step, and a second call that skips
    what finished but reruns what failed."""
    monkeypatch.setattr(gpu_session, "PACK_RESERVE_S", 0.0)
    pid_file = tmp_path / "child.pid"
    spawn = with_a_child(pid_file)
    steps = [
        Step("fine", [PY, "-c", "print('hello')"], 0),
        Step("broken", [PY, "-c", "import sys; sys.exit(3)"], 0),
        Step("there", [PY, "-c", "import sys; sys.exit(1)"], 0, satisfied=lambda: "made before"),
        Step("not-ready", [PY, "-c", "pass"], 0, ready=lambda: "no checkpoint"),
        Step("slow", [PY, "-c", spawn], 1),
        Step("late", [PY, "-c", "pass"], 5),
    ]
    packed = []
    began = time.monotonic()
    outcomes = run_session(steps, tmp_path / "work", 8.0, lambda o: packed.append(len(o)))
    assert time.monotonic() - began < 30
    status = {o.name: o.status for o in outcomes}
    assert status["fine"] == "ok" and status["broken"] == "failed (exit 3)"
    assert status["there"] == "ok: made before"
    assert status["not-ready"] == "skipped: no checkpoint"
    assert status["slow"].startswith("timed out")
    assert status["late"].startswith("skipped:") and "needs at least 5" in status["late"]
    assert packed == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "work" / "logs" / "fine.log").read_text().endswith("hello\n")
    time.sleep(0.5)
    assert not alive(int(pid_file.read_text()))  # the step's child went with it

    again = run_session(steps[:2], tmp_path / "work", 60.0, lambda o: None)
    assert [o.status for o in again] == ["done before", "failed (exit 3)"]


def test_sigterm_stops_the_running_step_too(tmp_path):
    """When the session itself is stopped (the device tool's timeout sends SIGTERM), does the
    step's process group go too, rather than run on in its own session?"""
    import signal
    import subprocess

    pid_file = tmp_path / "child.pid"
    spawn = with_a_child(pid_file)
    session = (
        "import sys; from pathlib import Path; import gpu_session as g; g.stop_on_sigterm(); "
        f"g.run_session([g.Step('slow', [sys.executable, '-c', {spawn!r}], 1)], "
        f"Path({str(tmp_path / 'work')!r}), 100.0, lambda o: None)"
    )
    benchmarks = str(Path(gpu_session.__file__).parent)
    proc = subprocess.Popen([PY, "-c", session], cwd=benchmarks)
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.5)
    assert not alive(int(pid_file.read_text()))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a killed orphan left as a zombie, unreaped by PID 1, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "\nState:\tZ" in status.read_text())


def write_log(work: Path, name: str, text: str) -> None:
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "logs" / f"{name}.log").write_text(text)


def test_the_checkpoint_comes_back_in_parts_and_is_joined_intact(tmp_path, lab_data, capsys):
    work, out = tmp_path / "work", tmp_path / "out"
    source = tmp_path / "device" / "vgg.cifar.pretrained.pth"
    source.parent.mkdir()
    save_checkpoint(VGG(SMALL_VGG_ARCH), source, test_accuracy=12.5)
    write_log(work, "train-dense", "epoch 1\r 10%\r100%\ntest accuracy 12.50%\n")
    notebook = tmp_path / "lab1_pruning-full.ipynb"
    notebook.write_text("{}")
    outcomes = [gpu_session.Outcome("train-dense", "ok", 3.0, "python -m helpers train-dense")]
    write_out(out, outcomes, work, source, [notebook, tmp_path / "absent"], "# h", 64 * 1024)

    record = json.loads((out / "gpu_session.json").read_text())
    parts = sorted(out.glob("vgg.cifar.pretrained.pth.part*"))
    assert len(parts) == len(record["checkpoint"]["parts"]) > 1
    assert all(p.stat().st_size <= 64 * 1024 for p in parts)
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["logs/train-dense.log", "runs/lab1_pruning-full.ipynb"]
    summary = (out / "summary.md").read_text()
    assert "| train-dense | ok | 3 |" in summary
    assert "100%\ntest accuracy 12.50%" in summary and "10%" not in summary  # redraws dropped

    runs = tmp_path / "runs"
    assert gpu_session.main(["fetch", str(out), "--runs", str(runs)]) == 0
    target = lab_data / source.name
    assert target.read_bytes() == source.read_bytes()
    load_checkpoint(VGG(SMALL_VGG_ARCH), target)
    assert (runs / "fetched" / "logs" / "train-dense.log").is_file()
    assert gpu_session.main(["fetch", str(out), "--runs", str(runs)]) == 0  # same file: fine

    target.write_bytes(b"another checkpoint")
    capsys.readouterr()
    assert gpu_session.main(["fetch", str(out), "--runs", str(runs)]) == 2
    assert "move it away first" in capsys.readouterr().err
    assert target.read_bytes() == b"another checkpoint"

    target.unlink()
    damaged = bytearray(parts[1].read_bytes())
    damaged[100] ^= 0xFF
    parts[1].write_bytes(bytes(damaged))
    assert gpu_session.main(["fetch", str(out), "--runs", str(runs)]) == 2
    assert "part1 is damaged" in capsys.readouterr().err
    assert not any(lab_data.iterdir())  # no checkpoint, no temporary file left


def test_fetch_without_a_session_record_says_so(tmp_path, capsys):
    assert gpu_session.main(["fetch", str(tmp_path)]) == 2
    assert "gpu_session.json" in capsys.readouterr().err


def test_session_steps_skip_what_is_there_and_reuse_the_course_run(tmp_path, lab_data, monkeypatch):
    """Are the steps in the documented order; is the data step satisfied by a cache and
    train-dense by a checkpoint; do the labs wait for a checkpoint; and does dense-recipes
    get the train-dense checkpoint as a course run it accepts (same settings, no retraining)?"""
    smoke = get_profile("smoke")
    kit = tmp_path / "kit"
    names = [s.name for s in session_steps("smoke", kit, PY, tmp_path / "work")]
    assert names == [
        "environment",
        "data",
        "train-dense",
        "lab1",
        "lab3",
        "loader",
        "sparsity-search",
        "channel-sorting",
        "dense-recipes",
        "runtimes-quick",
    ]
    steps = {s.name: s for s in session_steps("smoke", kit, PY, tmp_path / "work")}
    assert steps["data"].ready() == f"no {kit / 'cifar10-jpg.tar.gz'}"
    assert steps["train-dense"].satisfied() is None
    assert "no trained checkpoint" in steps["lab1"].ready()
    folder, packed = lab_outputs(tmp_path / "work", "smoke")  # what `run` packs after a step
    for name in ("lab1", "lab3"):
        argv = steps[name].argv
        assert argv[argv.index("--out") + 1] == str(folder)
    assert sorted(p.name for p in packed) == [
        "lab1_pruning-smoke.ipynb",
        "lab1_pruning-smoke_files",
        "lab3_quant_prune-smoke.ipynb",
        "lab3_quant_prune-smoke_files",
    ]

    monkeypatch.setattr(helpers.data, "SYNTHETIC_TRAIN", 384)
    monkeypatch.setattr(helpers.data, "SYNTHETIC_TEST", 64)
    train_dense(smoke, device="cpu", verbose=False)
    lab_data.joinpath("cifar10_uint8.pt").write_bytes(b"")
    assert "is there already" in steps["data"].satisfied()
    assert "is there already" in steps["train-dense"].satisfied()
    assert steps["lab1"].ready() is None

    steps["dense-recipes"].before()
    epochs = default_recipe(smoke).epochs
    copied = tmp_path / "work" / "dense_recipes" / f"smoke-course-{epochs}ep-seed0.pth"
    config = dense_config(recipe_for("course", default_recipe(smoke), epochs), smoke, 0)
    assert finished_run(copied, config, "cpu") is not None
    assert copied.read_bytes() == default_dense_path(smoke).read_bytes()


def test_run_then_fetch_end_to_end(tmp_path, lab_data):
    """`run --profile smoke` (environment and train-dense) writes the files a device call
    returns; `fetch` puts the trained checkpoint into LAB_DATA, loadable."""
    import subprocess

    out, work = tmp_path / "out", tmp_path / "work"
    argv = [PY, "benchmarks/gpu_session.py", "run", "--profile", "smoke", "--budget", "240"]
    argv += ["--steps", "environment", "train-dense", "--out", str(out), "--work", str(work)]
    argv += ["--kit", str(tmp_path / "no-kit")]
    device_data = tmp_path / "device-data"
    env = {**os.environ, "LAB_DATA": str(device_data)}
    done = subprocess.run(
        argv, cwd=gpu_session.REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| train-dense | ok |" in done.stdout and "torch " + torch.__version__ in done.stdout
    assert gpu_session.main(["fetch", str(out), "--runs", str(tmp_path / "runs")]) == 0
    fetched = lab_data / "smoke-train-dense.pth"
    assert fetched.read_bytes() == (device_data / "smoke-train-dense.pth").read_bytes()
    load_checkpoint(VGG(SMALL_VGG_ARCH), fetched)


def test_unknown_steps_are_refused(tmp_path, capsys):
    argv = ["run", "--profile", "smoke", "--steps", "nope", "--kit", str(tmp_path)]
    assert gpu_session.main(argv + ["--work", str(tmp_path / "w")]) == 2
    assert "unknown step(s) nope" in capsys.readouterr().err


def test_the_image_venv_sees_only_the_gpu_images_packages(tmp_path):
    """Does `simulate`'s venv import torch (the image has it) but not nbformat or the lab's own
    helpers as installed packages (the image lacks them), and list no other distribution?"""
    import subprocess

    python = gpu_session.image_venv(tmp_path / "venv")
    probe = (
        "import importlib.metadata as md, importlib.util as u, json, torch; "
        "print(u.find_spec('nbformat') is None, u.find_spec('torchprofile') is None); "
        "print(json.dumps(sorted({d.metadata['Name'] for d in md.distributions()})))"
    )
    done = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    missing, names = done.stdout.splitlines()
    assert missing == "True True"
    listed = {normalize(n) for n in json.loads(names)}
    assert "torch" in listed and listed <= GPU_IMAGE_PACKAGES
