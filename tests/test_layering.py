"""Imports flow one way: evals -> strategies -> verifiers, probes -> reasoning core.

The core never imports the other folders; verifiers and probes import only the core;
strategies may also use verifiers and probes; nothing imports evals. vllm and torch are
imported lazily (inside functions), never at module level.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "reasoning": "core",
    "strategies": "strategies",
    "verifiers": "verifiers",
    "probes": "probes",
    "evals": "evals",
}
ALLOWED = {
    "core": {"core"},
    "verifiers": {"core", "verifiers"},
    "probes": {"core", "probes"},
    "strategies": {"core", "verifiers", "probes", "strategies"},
    "evals": {"core", "verifiers", "probes", "strategies", "evals"},
}
HEAVY = ("vllm", "torch", "transformers", "ray")


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "reasoning":
        return None
    if len(parts) > 1 and parts[1] in FOLDERS and parts[1] != "reasoning":
        return FOLDERS[parts[1]]
    return "core"


def test_imports_flow_one_way() -> None:
    problems = []
    for folder, layer in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    target = layer_of(name)
                    if target is not None and target not in ALLOWED[layer]:
                        problems.append(f"{path.relative_to(ROOT)} ({layer}) imports {name} ({target})")
    assert not problems, "\n".join(problems)


def test_heavy_libraries_are_imported_lazily() -> None:
    problems = []
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.parse(path.read_text()).body:
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                problems += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in HEAVY]
    assert not problems, "\n".join(problems)


def test_layer_map_matches_the_install_mapping() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for folder in ("strategies", "verifiers", "probes", "evals"):
        assert f'"reasoning.{folder}" = "{folder}"' in text
