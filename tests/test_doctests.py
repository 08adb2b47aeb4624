"""The examples in docstrings run and hold, in every module of the package.

The modules are found, not listed: every module of every package the project installs
(pyproject's ``[tool.setuptools] packages``), imported under its installed name (the
package-dir layout keeps pytest's own doctest collection from doing that). vLLM and torch are
imported lazily, so every module imports without them.
"""

import doctest
import importlib
import pkgutil
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def all_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules(path) if not m.ispkg]
    return sorted(names)


def examples(name: str) -> int:
    """Examples that run in `name`'s docstrings (those marked ``+SKIP`` do not)."""
    tests = doctest.DocTestFinder().find(importlib.import_module(name))
    return sum(1 for t in tests for e in t.examples if not e.options.get(doctest.SKIP))


MODULES = all_modules()
WITH_EXAMPLES = [name for name in MODULES if examples(name)]


def test_every_module_is_found() -> None:
    files = {
        p
        for folder in ("reasoning", "strategies", "verifiers", "probes", "evals")
        for p in (ROOT / folder).rglob("*.py")
    }
    found = {Path(importlib.import_module(name).__file__ or "") for name in MODULES}
    assert files == found
    assert {"reasoning.answers", "reasoning.strategies.particle_filtering", "reasoning.cli.common"} <= set(
        WITH_EXAMPLES
    )


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
