"""Size, engine-default, import and duplicate metrics of the package tree.

Usage: ``python scripts/tree_metrics.py [ROOT]`` (ROOT: the repository root; default: the one holding
this script). Packages come from pyproject's ``[tool.setuptools.package-dir]`` (or ``packages``) and
every subfolder holding an ``__init__.py``; stdlib only, plus the ``duplicates`` command for part 5.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve()


def discover() -> dict[Path, str]:
    """Map each package folder to its dotted name."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = dict(setup.get("package-dir", {}))
    if not mapping and isinstance(setup.get("packages"), list):
        mapping = {p: p.replace(".", "/") for p in setup["packages"]}
    elif not mapping:
        mapping = {"": setup.get("packages", {}).get("find", {}).get("where", ["."])[0]}
    found: dict[Path, str] = {}
    for prefix, folder in sorted(mapping.items(), key=lambda kv: kv[0].count(".")):
        base = (ROOT / folder).resolve()
        for here, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")) and d not in ("tests", "build"))
            path = Path(here)
            if path != base and "__init__.py" not in files:
                continue
            name = ".".join(p for p in (prefix, *path.relative_to(base).parts) if p)
            if name and (path not in found or path == base):
                found[path] = name
    return found


PKGS = discover()
CODE_DIRS = sorted({d for d in PKGS if d.parent not in PKGS})
FILES = sorted(f for d in CODE_DIRS for f in d.rglob("*.py") if not {"__pycache__", "tests"} & set(f.parts))


def rel(path: Path) -> str:
    """Path relative to the root."""
    return str(path.relative_to(ROOT))


def module_of(path: Path) -> tuple[str, str]:
    """(dotted module, dotted package) of a source file."""
    folder = path.parent
    while folder not in PKGS:
        folder = folder.parent
    extra = path.relative_to(folder).with_suffix("").parts
    mod = ".".join((PKGS[folder], *extra))
    return mod.removesuffix(".__init__"), PKGS[folder]


TREES = {f: ast.parse(f.read_text(), str(f)) for f in FILES}
MODS = {module_of(f)[0]: module_of(f)[1] for f in FILES}
PKG_NAMES = set(PKGS.values())


def table(rows: list[tuple[object, ...]], head: tuple[str, ...]) -> None:
    """Print aligned columns."""
    cells = [tuple(map(str, r)) for r in [head, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    for r in cells:
        cols = zip(r, widths, strict=True)
        print("  ".join(c.rjust(w) if c.isdigit() else c.ljust(w) for c, w in cols).rstrip())


def part1() -> None:
    """Lines per package."""
    print("== 1. Lines per package (own .py files, not recursive; physical lines) ==")
    rows = []
    for folder, name in sorted(PKGS.items(), key=lambda kv: kv[1]):
        own = [f for f in FILES if f.parent == folder]
        rows.append((name, rel(folder) + "/", len(own), sum(len(f.read_text().splitlines()) for f in own)))
    rows.append(("TOTAL", "", sum(r[2] for r in rows), sum(r[3] for r in rows)))
    table(rows, ("package", "folder", "files", "lines"))


def part2() -> None:
    """Largest functions and classes."""
    funcs, classes = [], []

    def visit(node: ast.AST, path: Path, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = prefix + child.name
                size = child.end_lineno - child.lineno + 1
                found = classes if isinstance(child, ast.ClassDef) else funcs
                found.append((size, name, f"{rel(path)}:{child.lineno}"))
                visit(child, path, name + ".")
            else:
                visit(child, path, prefix)

    for f, tree in TREES.items():
        visit(tree, f, "")
    print("\n== 2a. 20 largest functions/methods (end_lineno - lineno + 1, nested ones too) ==")
    table(sorted(funcs, reverse=True)[:20], ("lines", "function", "where"))
    print(f"   ({len(funcs)} functions/methods in all)")
    print("\n== 2b. 10 largest classes ==")
    table(sorted(classes, reverse=True)[:10], ("lines", "class", "where"))
    print(f"   ({len(classes)} classes in all)")


def literal(expr: ast.expr | None) -> tuple[bool, object]:
    """A constant, -constant, or Field/field/Option(default) constant."""
    if isinstance(expr, ast.Constant) and expr.value is not ...:
        return True, expr.value
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
        ok, value = literal(expr.operand)
        return ok and type(value) in (int, float), -value if ok and type(value) in (int, float) else None
    if isinstance(expr, ast.Call) and ast.unparse(expr.func).split(".")[-1] in ("Field", "field", "Option"):
        for kw in expr.keywords:
            if kw.arg == "default":
                return literal(kw.value)
        return literal(expr.args[0]) if expr.args else (False, None)
    return False, None


def numeric(value: object) -> bool:
    """A number or None (bools excluded)."""
    return value is None or type(value) in (int, float)


RULES = {  # label: (name matches, value matches)
    "kv_cache_gb (and names with a kv word)": (
        lambda n: bool(re.search(r"(^|_)kv(_|$)", n.lower())),
        numeric,
    ),
    'dtype = "auto"': (lambda n: n == "dtype", lambda v: v == "auto"),
    "hidden_states = True/False": (lambda n: n == "hidden_states", lambda v: type(v) is bool),
    "temperature (number or None)": (lambda n: n == "temperature", numeric),
    "*_temperature (other names, not above)": (lambda n: n.endswith("_temperature"), numeric),
}


def occurrences(tree: ast.Module) -> list[tuple[str, int, str, ast.expr | None]]:
    """(name, line, kind, value) for every named value site."""
    out: list[tuple[str, int, str, ast.expr | None]] = []
    class_bodies = {id(s) for n in ast.walk(tree) if isinstance(n, ast.ClassDef) for s in n.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = [*zip(pos[len(pos) - len(a.defaults) :], a.defaults, strict=True)]
            pairs += zip(a.kwonlyargs, a.kw_defaults, strict=True)
            out += [(arg.arg, arg.lineno, "param", d) for arg, d in pairs if d is not None]
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            kind = "field" if id(node) in class_bodies else "assign"
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out += [(t.id, node.lineno, kind, node.value) for t in targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] not in ("Field", "field"):
            out += [(k.arg, k.value.lineno, "call kwarg", k.value) for k in node.keywords if k.arg]
        elif isinstance(node, ast.Dict):
            out += [
                (k.value, k.lineno, "dict key", v)
                for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            ]
    return out


def part3() -> None:
    """Engine defaults stated as literals."""
    print("\n== 3. Places that state an engine default (literal values, code folders only, via ast) ==")
    print("   kinds: param = function/CLI argument default; field = class-body (dataclass/pydantic) default,")
    print("   incl. Field(default=...); assign = other assignment (alias); call kwarg = f(name=literal);")
    print("   dict key = {'name': literal}. Docstrings/comments/YAML are not counted.")
    hits: dict[str, list[tuple[str, int, str, str]]] = defaultdict(list)
    for f, tree in TREES.items():
        for name, line, kind, expr in occurrences(tree):
            ok, value = literal(expr)
            for label, (name_ok, value_ok) in RULES.items():
                if ok and name_ok(name) and value_ok(value):
                    hits[label].append((kind, f"{name}={value!r}", rel(f), line))
    for label in RULES:
        kinds = Counter(r[0] for r in hits[label])
        print(f"-- {label}: {len(hits[label])} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})")
        groups: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for kind, what, path, line in sorted(hits[label]):
            groups[kind, what][path].append(line)
        for (kind, what), paths in groups.items():
            where = "; ".join(f"{p}:{','.join(map(str, lines))}" for p, lines in paths.items())
            count = sum(map(len, paths.values()))
            text = f"{kind} {what} x{count}: {where}"
            print(textwrap.fill(text, 110, initial_indent="   ", subsequent_indent="      "))


def package_of(module: str) -> str:
    """Dotted package a module (or package) belongs to."""
    if module in MODS:
        return MODS[module]
    parts = module.split(".")
    while parts and ".".join(parts) not in PKG_NAMES:
        parts.pop()
    return ".".join(parts) or module


def part4() -> None:
    """Import arrows and private imports."""
    tops = {p.split(".")[0] for p in PKG_NAMES}
    edges: Counter[tuple[str, str]] = Counter()
    private = []
    for f, tree in TREES.items():
        mod, pkg = module_of(f)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = mod.split(".")[: None if f.name == "__init__.py" else -1]
                base = base[: len(base) - node.level + 1] if node.level else []
                src = ".".join([*base, *filter(None, [node.module])])
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in MODS else src for a in node.names]
                names = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if names and src.split(".")[0] in tops and src != mod:
                    private.append((rel(f), node.lineno, len(names), f"{mod} <- {src}: {', '.join(names)}"))
            else:
                continue
            for target in {package_of(t) for t in targets if t.split(".")[0] in tops}:
                edges[pkg, target] += 1
    print("\n== 4. Import arrows between packages (import statements, incl. relative and function-local;")
    print("   a statement reaching several packages counts once for each; a -> a is within one package) ==")
    for (a, b), n in sorted(edges.items()):
        print(f"   {a} -> {b}: {n}{'   (self)' if a == b else ''}")
    print(f"-- private names imported from another module (`from m import _x`): {sum(p[2] for p in private)}")
    for path, line, _, what in sorted(private):
        print(f"   {f'{path}:{line}':44} {what}")


def part5() -> None:
    """Duplicates within the code folders."""
    cmd = ["duplicates", "--repo", str(ROOT), "--most", "200", "--seconds", "120"]
    print(f"\n== 5. {' '.join(cmd[:1] + cmd[3:])} (whole repo), rows with both sides in code folders ==")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"   could not run duplicates: {exc}")
        return
    code = tuple(rel(d) + "/" for d in CODE_DIRS)
    rows = [line for line in out if re.match(r"D\d+ ", line)]
    mine = [r for r in rows if all(side.startswith(code) for side in re.findall(r"(\S+):\d+-\d+", r))]
    print(f"   whole tree: {out[0] if out else '(no output)'}")
    print(f"   pairs with both sides in code folders: {len(mine)} of {len(rows)} rows listed")
    for line in mine:
        print(f"   {line}")
    for line in out[1:]:
        if not re.match(r"D\d+ ", line):
            print(f"   {line}")


if __name__ == "__main__":
    print(f"root: {ROOT}\ncode folders: {', '.join(rel(d) for d in CODE_DIRS)}; {len(FILES)} .py files")
    part1()
    part2()
    part3()
    part4()
    part5()
