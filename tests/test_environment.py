"""Does the set-up agree with itself: pyproject, environment.yml, Makefile and CI?"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

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
