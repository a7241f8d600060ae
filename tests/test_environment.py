"""Does the set-up agree with itself: pyproject, environment.yml, Makefile and CI?"""

from __future__ import annotations

import importlib
import re
import tomllib
from importlib.metadata import version

import pytest
import torch
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import helpers
from helpers.profiles import REPO_ROOT

CONDA_TO_PIP = {"pytorch": "torch"}


def pyproject_requirements() -> dict[str, SpecifierSet]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    parsed = [Requirement(line) for line in requirements]
    return {r.name.lower(): r.specifier for r in parsed}


def conda_requirements() -> dict[str, SpecifierSet]:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    lines: list[str] = []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            lines.extend(entry["pip"])
        elif entry not in {"pip"} and not entry.startswith("python"):
            lines.append(entry)
    result = {}
    for line in lines:
        name, spec = re.match(r"^([A-Za-z0-9_.-]+)(.*)$", line.strip()).groups()
        result[CONDA_TO_PIP.get(name.lower(), name.lower())] = SpecifierSet(spec.replace(" ", ""))
    return result


def test_environment_yml_lists_the_same_packages_and_ranges_as_pyproject():
    """Would a conda user get the same dependencies, with the same ranges, as a pip user?"""
    assert conda_requirements() == pyproject_requirements()


@pytest.mark.parametrize("name", sorted(pyproject_requirements()))
def test_installed_versions_satisfy_the_declared_ranges(name):
    """Does this machine's environment satisfy every range we declare for users?"""
    specifier = pyproject_requirements()[name]
    assert specifier.contains(version(name), prereleases=True), (name, version(name), specifier)


def test_ci_runs_the_readme_test_command():
    """Does CI call `make test`, the command the README gives for the tests?"""
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in (REPO_ROOT / "README.md").read_text()


def test_min_torch_is_the_declared_lower_bound():
    """Does the import-time warning name the same oldest torch and torchvision as pyproject?"""
    for name, minimum in (("torch", helpers.MIN_TORCH), ("torchvision", helpers.MIN_TORCHVISION)):
        bounds = [s.version for s in pyproject_requirements()[name] if s.operator == ">="]
        assert len(bounds) == 1
        assert helpers.torch_version(bounds[0]) == minimum, name


@pytest.mark.parametrize(
    "text", ["2.11.0+cu130", "2.14.1", "2.2.2+cu121", "2.12.0a0+git1a2b3c", "10.0.1", "2.9.1+cpu"]
)
def test_torch_version_reads_major_and_minor(text):
    """Is (major, minor) what packaging's own version parser reads from the same text?"""
    assert helpers.torch_version(text) == Version(text).release[:2]


def test_importing_helpers_warns_on_an_old_torch(monkeypatch):
    """With an older PyTorch than MIN_TORCH, does importing helpers say how to upgrade?"""
    assert helpers.old_torch_message() is None  # this machine's torch is recent enough
    minimum = ".".join(map(str, helpers.MIN_TORCH))
    monkeypatch.setattr(torch, "__version__", "2.2.2+cu121")
    try:
        with pytest.warns(UserWarning, match=rf"PyTorch 2\.2\.2\+cu121 is older than {minimum}"):
            importlib.reload(helpers)
    finally:
        monkeypatch.undo()
        importlib.reload(helpers)
