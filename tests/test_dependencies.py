"""Every third-party package the code imports is declared in pyproject.toml: the app's as runtime dependencies
(directly, through an extra of one such as flwr[simulation], or in an optional extra such as `tracking`), the
scripts' and tests' at least in the test extra."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_names(requirements: list[str]) -> set[str]:
    """Normalised distribution names of PEP 508 requirement strings."""
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", r).group(0)).lower() for r in requirements}


def imported_top_level(files: list[Path]) -> set[str]:
    """Top-level module names imported (absolutely) by `files`."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def third_party(names: set[str]) -> set[str]:
    """`names` without the standard library and this repository's own modules (the package, scripts, tests)."""
    local = {"warmfed_flwr", "client_app", "server_app", "conftest"}
    local |= {path.stem for folder in ("scripts", "tests") for path in (ROOT / folder).glob("*.py")}
    return {name for name in names if name not in sys.stdlib_module_names and name not in local and name != "__future__"}


@functools.cache
def module_providers() -> dict[str, list[str]]:
    """Top-level module -> the installed distributions providing it (a scan of every installed package)."""
    return importlib.metadata.packages_distributions()


def distributions(module: str) -> set[str]:
    """The normalised names of the installed distributions that provide `module`."""
    providers = module_providers().get(module, [])
    assert providers, f"no installed distribution provides the imported module {module!r}"
    return {re.sub(r"[-_.]+", "-", name).lower() for name in providers}


def with_extras(requirements: list[str]) -> set[str]:
    """Normalised names of `requirements` and of what their extras pull in (flwr[simulation] brings ray)."""
    names = requirement_names(requirements)
    for requirement in requirements:
        match = re.match(r"([A-Za-z0-9_.-]+)\[([^]]+)\]", requirement)
        if match:
            extras = {extra.strip() for extra in match.group(2).split(",")}
            for dependency in importlib.metadata.requires(match.group(1)) or []:
                if any(f'extra == "{extra}"' in dependency or f"extra == '{extra}'" in dependency for extra in extras):
                    names |= requirement_names([dependency])
    return names


def test_runtime_imports_are_runtime_dependencies() -> None:
    optional = PYPROJECT["project"]["optional-dependencies"]
    declared = with_extras(PYPROJECT["project"]["dependencies"])
    declared |= {name for extra, requirements in optional.items() if extra != "test" for name in requirement_names(requirements)}
    files = [*(ROOT / "warmfed_flwr").rglob("*.py"), ROOT / "client_app.py", ROOT / "server_app.py"]
    modules = third_party(imported_top_level(files))
    assert {"torch", "diffusers", "PIL", "datasets", "numpy", "peft"} <= modules  # the scan sees imports
    undeclared = {module: distributions(module) for module in modules if not distributions(module) & declared}
    assert not undeclared, f"imported by the app but not in [project].dependencies: {undeclared}"


def test_script_and_test_imports_are_declared_and_test_only_ones_stay_out_of_runtime() -> None:
    runtime = with_extras(PYPROJECT["project"]["dependencies"])
    test_extra = requirement_names(PYPROJECT["project"]["optional-dependencies"]["test"])
    files = [*(ROOT / "scripts").glob("*.py"), *(ROOT / "tests").glob("*.py")]
    modules = third_party(imported_top_level(files))
    undeclared = {module: distributions(module) for module in modules if not distributions(module) & (runtime | test_extra)}
    assert not undeclared, f"imported by scripts/tests but declared nowhere: {undeclared}"
    assert "pytest" in test_extra and "pytest" not in runtime


def pinned_versions() -> dict[str, str]:
    """constraints.txt as normalised name -> exact version."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def test_constraints_pin_every_declared_dependency_within_its_range() -> None:
    """Every dependency of pyproject.toml (runtime and extras) has one exact version in constraints.txt, inside the
    range pyproject.toml declares, so `make setup` installs the same versions on every machine."""
    pins = pinned_versions()
    optional = PYPROJECT["project"]["optional-dependencies"]
    requirements = [*PYPROJECT["project"]["dependencies"], *(r for extra in optional.values() for r in extra)]
    for requirement in map(Requirement, requirements):
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{requirement.name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[name]}, outside pyproject.toml's {requirement}"
        )


def test_the_environment_is_the_locked_one() -> None:
    """The tests run with exactly the versions of constraints.txt (`make setup` installs them); a drifted package
    would change the numbers the tests and benchmarks compare against."""
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in importlib.metadata.distributions()}
    drifted = {name: (version, installed.get(name)) for name, version in pinned_versions().items()
               if installed.get(name) != version}
    assert not drifted, f"installed versions differ from constraints.txt (pinned, installed): {drifted}; run `make setup`"
