import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def out_of_order(names: list[str]) -> list[str]:
    """Names of `__all__` out of place: constants first, then the rest, each alphabetically."""
    expected = sorted(names, key=lambda n: (not n.isupper(), n))
    return [n for n, e in zip(names, expected, strict=True) if n != e]


def test_the_order_check_can_fail() -> None:
    assert out_of_order(["b", "a"]) == ["b", "a"]
    assert out_of_order(["Run", "DEFAULT_MODEL"]) == ["Run", "DEFAULT_MODEL"]
    assert out_of_order(["DEFAULT_MODEL", "Run", "collect"]) == []


@pytest.mark.parametrize("module", ["reasoning", "reasoning.strategies", "reasoning.verifiers"])
def test_public_names_are_sorted_unique_and_importable(module: str) -> None:
    package = importlib.import_module(module)
    names = list(package.__all__)
    assert not out_of_order(names)
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(package, name), name


def test_import_reasoning_does_not_import_vllm_or_torch() -> None:
    code = (
        "import sys, reasoning, reasoning.strategies, reasoning.cli; "
        "print(any(m in sys.modules for m in ('vllm', 'torch')))"
    )
    # -I: no PYTHONPATH/user site, so a sitecustomize that emulates another CPU (it imports
    # torch; README, Development) cannot make this pass or fail.
    command = [sys.executable, "-I", "-c", code]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", ["strategies", "verifiers", "probes", "evals"])
def test_a_checkout_does_not_import_as_generic_top_level_names(name: str) -> None:
    """From the repository root (on ``sys.path`` there) the folders import only as ``reasoning.*``."""
    code = (
        f"import reasoning.{name}\n"
        "try:\n"
        f"    import {name}\n"
        "except ImportError as exc:\n"
        "    print('refused:', exc)\n"
        "else:\n"
        f"    print('imported:', {name}.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.startswith("refused:"), done.stdout
    assert f"reasoning.{name}" in done.stdout
