"""Imports flow one way: cli -> serving, evals -> strategies -> verifiers, probes -> reasoning core.

The core (reasoning/ with its backends/ and engine/) never imports the other folders;
verifiers and probes import only the core; strategies may also use verifiers and probes;
evals uses all of those; the serving package (reasoning/serving/: the proxy, ``vllm serve``)
uses the strategies but not evals; only the command line (reasoning/cli/) imports everything,
and nothing imports it. vllm and torch are imported lazily (inside functions), never at
module level. docs/architecture.md draws the same rooms.
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
SUBPACKAGES = {"cli": "cli", "serving": "serving"}
"""Subpackages of reasoning/ that sit above the core (by their folder name)."""
ALLOWED = {
    "core": {"core"},
    "verifiers": {"core", "verifiers"},
    "probes": {"core", "probes"},
    "strategies": {"core", "verifiers", "probes", "strategies"},
    "evals": {"core", "verifiers", "probes", "strategies", "evals"},
    "serving": {"core", "verifiers", "probes", "strategies", "serving"},
    "cli": {"core", "verifiers", "probes", "strategies", "evals", "serving", "cli"},
}
HEAVY = ("vllm", "torch", "transformers", "ray")


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "reasoning":
        return None
    if len(parts) > 1 and parts[1] in FOLDERS and parts[1] != "reasoning":
        return FOLDERS[parts[1]]
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return SUBPACKAGES[parts[1]]
    return "core"


def layer_of_file(path: Path, folder_layer: str) -> str:
    """A file's layer: its folder's, or its subpackage's inside reasoning/."""
    relative = path.relative_to(ROOT).parts
    if relative[0] == "reasoning" and len(relative) > 2 and relative[1] in SUBPACKAGES:
        return SUBPACKAGES[relative[1]]
    return folder_layer


def test_imports_flow_one_way() -> None:
    problems = []
    for folder, folder_layer in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            layer = layer_of_file(path, folder_layer)
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                    if node.module == "reasoning":  # `from reasoning import strategies`: the room's
                        names += [f"reasoning.{a.name}" for a in node.names if a.name in FOLDERS]
                for name in names:
                    target = layer_of(name)
                    if target is not None and target not in ALLOWED[layer]:
                        problems.append(f"{path.relative_to(ROOT)} ({layer}) imports {name} ({target})")
    assert not problems, "\n".join(problems)


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """The statements that run on import: the module's own, inside its `if`/`try`/`with` blocks
    too, but not inside functions (a class body runs on import: it counts)."""
    found: list[ast.stmt] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                pending.append(child)
            elif isinstance(child, ast.excepthandler):
                pending.extend(child.body)
    return found


def test_heavy_libraries_are_imported_lazily() -> None:
    problems = []
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            for node in _module_level(ast.parse(path.read_text())):
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


def test_the_command_line_and_serving_are_rooms_of_their_own() -> None:
    assert layer_of("reasoning.cli.solve") == "cli" and layer_of("reasoning.serving.proxy") == "serving"
    assert layer_of("reasoning.backends.start") == layer_of("reasoning.engine.models") == "core"
    assert layer_of_file(ROOT / "reasoning" / "cli" / "solve.py", "core") == "cli"
    assert layer_of_file(ROOT / "reasoning" / "backends" / "start.py", "core") == "core"
    assert "cli" not in ALLOWED["evals"] | ALLOWED["serving"] and "evals" not in ALLOWED["serving"]
    guarded = ast.parse(
        "try:\n    import torch\nexcept ImportError:\n    import vllm\ndef f():\n    import ray\n"
    )
    imported = {a.name for n in _module_level(guarded) if isinstance(n, ast.Import) for a in n.names}
    assert imported == {"torch", "vllm"}  # module-level blocks count, function bodies do not


def _kernel_imports(path: Path) -> set[str]:
    """The kernel modules `path` imports (anywhere in it, lazily too; not under TYPE_CHECKING)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.dump(child.test):
                continue
            names = []
            if isinstance(child, ast.ImportFrom) and child.module:
                names = [child.module]
            elif isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            found.update(n for n in names if n.startswith("reasoning.") and n.count(".") == 1)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_the_kernel_modules_import_each_other_without_cycles() -> None:
    """compose and registry, strategy and verifier, ...: each seam a file, no two needing each other."""
    import graphlib

    graph = {
        f"reasoning.{path.stem}": _kernel_imports(path)
        for path in (ROOT / "reasoning").glob("*.py")
        if path.stem != "__init__"
    }
    graphlib.TopologicalSorter(graph).static_order()  # raises CycleError on a cycle
    assert "reasoning.compose" not in graph["reasoning.registry"]
    assert "reasoning.strategy" not in graph["reasoning.verifier"]
