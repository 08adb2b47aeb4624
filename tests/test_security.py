"""The testable claims of SECURITY.md: loopback defaults, no pickle or eval, paths that stay put."""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ("reasoning", "strategies", "verifiers", "probes", "evals")


@functools.cache
def _sources() -> list[tuple[str, ast.AST]]:
    return [
        (str(path.relative_to(ROOT)), ast.parse(path.read_text()))
        for folder in PACKAGE
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]


def _default(function: object, name: str) -> object:
    default = inspect.signature(function).parameters[name].default  # type: ignore[arg-type]
    return getattr(default, "default", default)  # typer's OptionInfo keeps it in .default


def test_everything_that_listens_binds_loopback_by_default() -> None:
    from reasoning.cli.proxy import proxy
    from reasoning.cli.serve import serve
    from reasoning.serving.server import VLLMServer

    assert _default(serve, "host") == "127.0.0.1"
    assert _default(proxy, "host") == "127.0.0.1"
    assert _default(VLLMServer.__init__, "host") == "127.0.0.1"


def test_the_proxy_key_is_compared_in_constant_time() -> None:
    source = (ROOT / "reasoning" / "serving" / "proxy.py").read_text()
    assert "secrets.compare_digest(" in source
    assert "== settings.api_key" not in source and "settings.api_key ==" not in source


@pytest.mark.parametrize(
    "banned",
    [("pickle", None), ("torch", "load"), ("builtins", "eval"), ("builtins", "exec"), ("yaml", "load")],
)
def test_no_pickle_no_eval_no_unsafe_yaml(banned: tuple[str, str | None]) -> None:
    module, attribute = banned
    found = []
    for name, tree in _sources():
        for node in ast.walk(tree):
            if module == "builtins" and isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == attribute:
                    found.append(f"{name}:{node.lineno}")
            elif module == "pickle" and isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib") for n in names):
                    found.append(f"{name}:{node.lineno}")
            elif (
                isinstance(node, ast.Attribute)
                and node.attr == attribute
                and isinstance(node.value, ast.Name)
                and node.value.id == module
            ):
                found.append(f"{name}:{node.lineno}")
    assert not found, f"{module}.{attribute or ''} used at: {', '.join(found)}"


def test_only_the_server_starter_the_hardware_probe_and_the_grader_start_processes() -> None:
    starters = set()
    for name, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if "subprocess" in names or any(n in ("system", "popen") for n in names if n):
                    starters.add(name)
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("system", "popen")
                and getattr(node.value, "id", "") == "os"
            ):
                starters.add(name)
    # The grader's worker processes (verifiers/grading.py): sympy on model output under a hard limit.
    assert starters == {"reasoning/serving/server.py", "reasoning/engine/hardware.py", "verifiers/grading.py"}
    for name in starters:  # and never through a shell
        assert "shell=True" not in (ROOT / name).read_text()


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "..", "/abs/path", "a/../../b", "~/x", "C:\\win", ".hidden", ""]
)
def test_report_file_names_from_spec_names_stay_in_the_report_folder(tmp_path: Path, name: str) -> None:
    from reasoning.evals.leaderboard.report import _slugs

    slug = _slugs([name])[name]
    assert (
        slug and "/" not in slug and "\\" not in slug and slug not in (".", "..") and not slug.startswith(".")
    )
    target = (tmp_path / f"frontier-{slug}.png").resolve()
    assert target.parent == tmp_path.resolve()


def test_probe_artefacts_and_results_are_data_formats() -> None:
    source = (ROOT / "probes" / "probe.py").read_text() + (ROOT / "probes" / "data.py").read_text()
    assert "safetensors" in source and "pickle" not in source.replace("never pickle", "")
