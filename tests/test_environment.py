"""pyproject.toml and environment.yml must describe the same environment."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONDA_ONLY = {"python", "pip", "tomopy"}


def _split(requirement: str) -> tuple[str, str]:
    requirement = requirement.split("#")[0].strip()
    match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", requirement)
    name = match.group(1).lower().replace("_", "-")
    # conda writes python=3.11 for ==; normalise so specifiers compare equal.
    spec = re.sub(r"(?<![=<>!])=(?!=)", "==", match.group(3).replace(" ", ""))
    return name, spec


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for items in project["optional-dependencies"].values():
        reqs += [r for r in items if not r.startswith(project["name"])]
    return dict(_split(r) for r in reqs)


def _environment() -> dict[str, str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    reqs = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            reqs += [r for r in dep["pip"] if not r.startswith("-e")]
        else:
            reqs.append(dep)
    return dict(_split(r) for r in reqs)


def test_environment_yml_and_pyproject_list_the_same_packages_and_pins():
    pyproject = _pyproject()
    environment = {k: v for k, v in _environment().items() if k not in CONDA_ONLY}
    assert sorted(environment) == sorted(pyproject)
    assert environment == pyproject


def test_torch_pins_and_conda_only_tomopy():
    pyproject = _pyproject()
    assert pyproject["torch"] == "==2.14.1"
    assert pyproject["torchvision"] == "==0.29.1"
    assert "tomopy" in _environment() and "tomopy" not in pyproject
    assert "histolab" not in pyproject  # forces numpy 1.24
