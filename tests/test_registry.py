"""The registry: re-registration, name conflicts, and user strategies from modules and plugins."""

import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import reasoning.strategies  # noqa: F401  (the built-in names, which plugins must not take)
from reasoning import STRATEGIES, ConfigError, Controller, Problem, Registry, ScriptedBackend, registry
from reasoning.registry import ENTRY_POINT_GROUP, import_strategies

PLUGIN = '''
from dataclasses import dataclass

from reasoning import STRATEGIES, Result, Sampling


@STRATEGIES.register("{name}")
@dataclass(frozen=True)
class {cls}:
    """Answers with one greedy sample."""

    max_tokens: int = 8
    """Most tokens."""

    async def __call__(self, problem, ctx):
        [completion] = await ctx.generate(ctx.request(Sampling(temperature=0, max_tokens=self.max_tokens)))
        return Result.pick(await ctx.candidates([completion]), 0)
'''


@pytest.fixture
def clean_registry(tmp_path: Path):
    """What a test registers, and the modules it imports from `tmp_path`, are gone afterwards."""
    classes, aliases = dict(STRATEGIES._classes), dict(STRATEGIES._aliases)
    warned = set(registry._BROKEN_PLUGINS)
    yield
    STRATEGIES._classes, STRATEGIES._aliases = classes, aliases
    registry._BROKEN_PLUGINS.clear()
    registry._BROKEN_PLUGINS.update(warned)
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def notebook_cell(registry: Registry, default: int) -> type:
    """What running a notebook cell defines: a new class object, same module and name each run."""

    @registry.register("cell", "cell-alias")
    @dataclass(frozen=True)
    class Cell:
        n: int = default

    return Cell


def test_running_a_cell_again_replaces_the_class() -> None:
    registry: Registry[object] = Registry("strategy")
    first = notebook_cell(registry, 1)
    second = notebook_cell(registry, 2)
    assert first is not second
    assert registry.get("cell") is second and registry.get("cell-alias") is second
    assert registry.create("cell") == second(n=2)
    assert registry.name_of(first()) == "cell"  # an instance made before the re-run still has its name


def test_another_class_under_a_taken_name_or_alias_is_refused() -> None:
    registry: Registry[object] = Registry("strategy")

    @registry.register("vote", "v")
    @dataclass(frozen=True)
    class Vote:
        pass

    @dataclass(frozen=True)
    class Other:
        pass

    with pytest.raises(ConfigError, match=r"'vote' is already registered to .*Vote; cannot"):
        registry.register("vote")(Other)
    with pytest.raises(ConfigError, match=r"'v' \(an alias of 'vote'\)"):
        registry.register("other", "v")(Other)
    with pytest.raises(ConfigError, match="strategy 'v'"):
        registry.register("v")(Other)  # the name would be shadowed by the alias
    assert registry.names() == ["vote"] and registry.get("v") is Vote


def test_a_builtin_name_cannot_be_taken() -> None:
    @dataclass(frozen=True)
    class Impostor:
        pass

    with pytest.raises(ConfigError, match="'sc' \\(an alias of 'self-consistency'\\)"):
        STRATEGIES.register("mine", "sc")(Impostor)
    assert "mine" not in STRATEGIES.names()


def test_import_strategies_by_module_name_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_registry: None
) -> None:
    (tmp_path / "my_strategies.py").write_text(PLUGIN.format(name="my-greedy", cls="MyGreedy"))
    monkeypatch.chdir(tmp_path)
    assert import_strategies(["my_strategies"], installed=False) == ["my-greedy"]
    assert import_strategies(["my_strategies"], installed=False) == []  # again: nothing new, no error
    assert str(tmp_path) not in sys.path
    strategy = STRATEGIES.create("my-greedy", {"max_tokens": "4"})
    run = Controller(ScriptedBackend(["\\boxed{4}"])).run_sync(Problem("p", "2+2?"), strategy)
    assert (run.answer, run.strategy, run.params) == ("4", "my-greedy", {"max_tokens": 4})


def test_import_strategies_from_a_file(tmp_path: Path, clean_registry: None) -> None:
    path = tmp_path / "file_strategies.py"
    path.write_text(PLUGIN.format(name="file-greedy", cls="FileGreedy"))
    assert import_strategies([str(path)], installed=False) == ["file-greedy"]
    assert import_strategies([str(path)], installed=False) == []


@pytest.mark.parametrize(
    ("module", "source", "message"),
    [
        ("no_such_module_here", None, "strategies module 'no_such_module_here': no module named"),
        ("missing.py", None, "no such file"),
        ("broken_module", "raise RuntimeError('boom')", "failed to import: RuntimeError: boom"),
        ("taker", PLUGIN.format(name="single", cls="Taker"), "'single' is already registered"),
    ],
)
def test_import_failures_name_the_module(
    module: str,
    source: str | None,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_registry: None,
) -> None:
    if source is not None:
        (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        import_strategies([module], installed=False)


def install(site: Path, entry_points: str) -> None:
    """A distribution as pip leaves it: a dist-info folder with metadata and entry points."""
    info = site / "demo_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{textwrap.dedent(entry_points)}")


def test_installed_plugins_register_through_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_registry: None
) -> None:
    (tmp_path / "demo_module.py").write_text(PLUGIN.format(name="demo-module", cls="DemoModule"))
    (tmp_path / "demo_classes.py").write_text(
        "from dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass Plain:\n    k: int = 1\n"
    )
    install(tmp_path, "demo = demo_module\ndemo-plain = demo_classes:Plain\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_strategies() == ["demo-module", "demo-plain"]
    assert import_strategies() == []
    assert STRATEGIES.create("demo-plain", {"k": "3"}).k == 3


def test_a_plugin_that_is_not_a_strategy_is_a_warning_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_registry: None, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "demo_bad.py").write_text("class NotADataclass:\n    pass\nVALUE = 3\n")
    install(tmp_path, "bad = demo_bad:NotADataclass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_strategies() == []
    assert re.search(r"'bad' \(demo_bad:NotADataclass, from demo-plugin\).*dataclass", caplog.text)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import no_such_dependency_here\n", "no module named 'no_such_dependency_here'"),
        ("raise RuntimeError('boom')\n", "failed to import: RuntimeError: boom"),
        (PLUGIN.format(name="single", cls="Taker"), "'single' is already registered"),
    ],
)
def test_a_plugin_that_fails_to_load_is_a_warning_and_the_others_still_load(
    source: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_registry: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "demo_broken.py").write_text(source)
    (tmp_path / "demo_fine.py").write_text(PLUGIN.format(name="demo-fine", cls="DemoFine"))
    install(tmp_path, "broken = demo_broken\nfine = demo_fine\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_strategies() == ["demo-fine"]
    [record] = [r for r in caplog.records if "broken" in r.getMessage()]
    assert record.levelname == "WARNING"
    text = record.getMessage()
    assert "plugin 'broken' (demo_broken, from demo-plugin)" in text and message in text, text
    assert "not available" in text
    caplog.clear()
    import_strategies()  # warned once per process, not on every call
    assert "broken" not in caplog.text
    with pytest.raises(ConfigError, match=re.escape(message)):
        import_strategies(["demo_broken"], installed=False)  # named on the command line: an error


def test_a_plugin_that_fails_to_import_does_not_block_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_registry: None
) -> None:
    from conftest import invoke

    (tmp_path / "demo_crash.py").write_text("raise RuntimeError('boom')\n")
    install(tmp_path, "crash = demo_crash\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, text = invoke("solve", "--question", "2+2?", "--backend", "scripted", "--strategy", "single")
    assert code == 0 and "answer: 0" in text, text


def test_aliases_are_listed() -> None:
    assert "beam-search" in STRATEGIES.aliases("beam")
    assert STRATEGIES.aliases("beam-search") == STRATEGIES.aliases("beam")
    with pytest.raises(ConfigError, match="unknown strategy"):
        STRATEGIES.aliases("no-such-strategy")
