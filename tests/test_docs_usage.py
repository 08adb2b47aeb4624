"""docs/usage.md's "Writing a strategy" section, run as written: the module, the Python example,
the commands (on the scripted backend) and the entry-point table (installed as pip would)."""

import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import invoke

from reasoning import STRATEGIES, registry
from reasoning.registry import ENTRY_POINT_GROUP, import_strategies

USAGE = Path(__file__).resolve().parents[1] / "docs" / "usage.md"


def section() -> str:
    text = USAGE.read_text(encoding="utf-8")
    start = text.index("## Writing a strategy\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(), flags=re.DOTALL)


@pytest.fixture
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The section's files in `tmp_path` (the current directory); what it registers is gone after."""
    classes, aliases = dict(STRATEGIES._classes), dict(STRATEGIES._aliases)
    warned = set(registry._BROKEN_PLUGINS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    STRATEGIES._classes, STRATEGIES._aliases = classes, aliases
    registry._BROKEN_PLUGINS.clear()
    registry._BROKEN_PLUGINS.update(warned)
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def test_the_table_names_the_import_path_of_everything_the_examples_use() -> None:
    text = section()
    for name in ("STRATEGIES", "Context", "Result", "Problem", "ScriptedBackend", "Controller", "Budget"):
        assert re.search(rf"`from reasoning import [^`]*\b{name}\b[^`]*`", text), name
    assert "`from reasoning.strategies import Sampled`" in text
    assert "ScriptedBackend([" in text  # its constructor
    imported = {
        name.strip()
        for block in blocks("python")
        for line in block.splitlines()
        if line.startswith("from reasoning")
        for name in line.split(" import ")[1].split(",")
    }
    assert imported <= {
        "STRATEGIES",
        "Context",
        "Problem",
        "Result",
        "Sampled",
        "Budget",
        "Controller",
        "ScriptedBackend",
    }


def test_the_module_and_the_python_example_run(clean: Path) -> None:
    module, example = blocks("python")
    (clean / "my_strategies.py").write_text(module)
    exec(compile(example, str(USAGE), "exec"), {})


def test_the_commands_run_on_the_scripted_backend(clean: Path) -> None:
    module, _ = blocks("python")
    (clean / "my_strategies.py").write_text(module)
    [commands] = blocks("bash")
    lines = [line for line in commands.splitlines() if line.strip()]
    assert lines and all(line.startswith("reasoning ") for line in lines)
    outputs = []
    for line in lines:
        code, text = invoke(*shlex.split(line)[1:])
        assert code == 0, (line, text)
        outputs.append(" ".join(text.split()))
    assert "vote-of-n (also: von)" in outputs[0]
    assert "answer: 4" in outputs[1] and "1/1 = 100%" in outputs[1]


def test_the_entry_point_table_registers_both_forms(clean: Path) -> None:
    module, _ = blocks("python")
    [toml] = blocks("toml")
    points = tomllib.loads(toml)["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert points == {
        "my_strategies": "my_package.my_strategies",
        "vote-of-n": "my_package.my_strategies:VoteOfN",
    }
    package = clean / "my_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "my_strategies.py").write_text(module)
    info = clean / "my_package-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-package\nVersion: 0.1\n")
    lines = "".join(f"{key} = {value}\n" for key, value in points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    assert import_strategies() == ["vote-of-n"]
    assert STRATEGIES.get("von").__module__ == "my_package.my_strategies"
