"""Settings that cannot work are refused while they are read, before any engine starts or any
server is asked anything, each with one error naming the flag (or field) to change (a newcomer
test's findings); and what `reasoning view` reads is a run record of a known format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke

from reasoning import ConfigError, DatasetError, Run, ScriptedBackend
from reasoning.cli import solve as cli
from reasoning.compose import build
from reasoning.record import FORMAT_VERSION


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a backend, a pool or asking a server fails the test: the checks must come first."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a backend was started (or a server asked) before the settings were checked")

    for name in ("launch", "launch_all", "launch_pool", "_served_model"):
        monkeypatch.setattr(cli, name, refuse)


def flat(text: str) -> str:
    return " ".join(text.split())


# -- named backends: checked with the strategy spec ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--backend", "scripted", "--strategy", "beam", "-p", "scorer=prm"],
            ["--strategy beam -p scorer=prm:", "backend 'prm'", "--prm PATH", "run spec field prm"],
        ),
        (
            ["--model", "0.5b", "--strategy", "spec-reason"],
            ["--strategy spec-reason:", "'draft' and 'target'", "--model draft=MODEL --model target=MODEL"],
        ),
        (
            ["--model", "target=0.5b", "--model", "other=1.5b", "--strategy", "spec-reason"],
            ["backends named 'draft'", "has backends other, target", "backends.draft"],
        ),
        (
            ["--backend", "scripted", "--strategy", "single", "--baseline", "trimr"],
            ["--baseline trimr:", "'target' and 'draft'"],
        ),
        (
            ["--backend", "scripted", "--strategy", "best-of-n", "-p", "judge_backend=judge"],
            ["backends named 'judge'", "--model judge=MODEL"],
        ),
    ],
)
@pytest.mark.usefixtures("nothing_starts")
def test_a_strategys_named_backends_are_checked_before_any_engine_starts(
    args: list[str], fragments: list[str]
) -> None:
    code, text = invoke("solve", "--question", "2+2?", *args)
    assert code == 1, text
    for fragment in fragments:
        assert fragment in flat(text), text


def test_a_prm_named_otherwise_than_prm_is_refused_with_the_field_to_drop() -> None:
    from reasoning.evals.spec import RunSpec

    spec = RunSpec(question="q", prm="/models/prm")
    strategy = build("beam", {"scorer": "prm", "scorer_backend": "reward"})
    with pytest.raises(ConfigError, match="drop scorer_backend=reward"):
        spec.check_backends(strategy, "--strategy beam")
    spec.check_backends(build("beam", {"scorer": "prm"}), "--strategy beam")  # served as 'prm': fine


def test_backends_needed_sees_a_prm_scorer_in_the_proxy_too() -> None:
    from reasoning.serving.proxy import ProxySettings, backends_needed, create_app
    from reasoning.strategies.named_backends import reward_backends_needed

    assert backends_needed(build("beam", {"scorer": "prm"})) == ["prm"]
    assert backends_needed(build("dvts", {"scorer": "prm", "scorer_backend": "r"})) == ["r"]
    assert reward_backends_needed(build("a-star", {"scorer": "prm"})) == ["prm"]
    assert backends_needed(build("beam", {"scorer": "value", "scorer_backend": "x"})) == []  # unused
    assert backends_needed(build("difficulty", {"hard": "spec-reason"})) == ["draft", "target"]
    with pytest.raises(ConfigError, match="needs backends named prm"):
        create_app(ScriptedBackend(["x"]), ProxySettings(model="scripted", strategy="beam(scorer=prm)"))
    code, text = invoke("proxy", "--backend", "scripted", "--strategy", "beam(scorer=prm)")
    assert code == 1 and "the proxy does not serve" in flat(text), text


def test_a_leaderboard_refuses_an_entry_whose_backends_its_model_lacks() -> None:
    import reasoning.strategies  # noqa: F401
    from reasoning.evals.leaderboard.spec import LeaderboardSpec

    spec = LeaderboardSpec.model_validate(
        {
            "name": "demo",
            "models": {
                "one": {"kind": "scripted"},
                "pair": {"backends": {"draft": {"kind": "scripted"}, "target": {"kind": "scripted"}}},
            },
            "datasets": {"g": "gsm8k"},
            "entries": [
                {"name": "sr", "strategy": "spec-reason", "params": {"n": [1, 2]}},
                {"strategy": "beam", "params": {"scorer": "prm"}, "models": ["pair"]},
                {"strategy": "spec-reason", "name": "sr-pair", "models": ["pair"]},
            ],
        }
    )
    with pytest.raises(ConfigError) as raised:
        spec.cells()
    message = str(raised.value)
    assert "entries[0] (sr): it calls backends named 'draft' and 'target', and model 'one'" in message
    assert message.count("entries[0]") == 1  # once, not once per sweep point
    assert "entries[1]: scorer=prm" in message and "does not serve" in message
    assert "entries[2]" not in message  # on the pair: fine


# -- solve's flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["--ray", "auto", "--base-url", "http://127.0.0.1:9"],
            "a running server (--base-url) cannot be replicated from here",
        ),
        (["--backend", "scripted", "--ray", ""], "--ray '' (ray) is empty: give auto"),
        (
            ["--backend", "scripted", "--kv-cache-gb", "3", "--dtype", "float32"],
            "--kv-cache-gb, --dtype: in-process engine options (--backend vllm), not used by --backend scr",
        ),
        (
            ["--model", "0.5b", "--script", "hi"],
            "--script: the scripted backend's reply, not used by --backend",
        ),
        (
            ["--backend", "scripted", "--deterministic", "--concurrency", "4"],
            "--concurrency 4 (concurrency): --deterministic solves one problem at a time",
        ),
        (["--backend", "openai", "--deterministic"], "--backend openai needs --base-url"),
    ],
)
@pytest.mark.usefixtures("nothing_starts")
def test_solve_flags_that_cannot_work_are_refused_before_anything_starts_or_is_asked(
    args: list[str], fragment: str
) -> None:
    code, text = invoke("solve", "--question", "2+2?", *args)
    assert code == 1 and fragment in flat(text), text


def test_deterministic_with_concurrency_one_is_fine() -> None:
    code, text = invoke(
        "solve", "--question", "2+2?", "--backend", "scripted", "--deterministic", "--concurrency", "1"
    )
    assert code == 0, text


# -- proxy's flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--group", "", "--model", "a=x", "--model", "b=y"], "--group '' is empty"),
        (["--backend", "openai", "--deterministic"], "--backend openai needs --base-url"),
    ],
)
def test_proxy_flags_that_cannot_work_are_one_clear_error(args: list[str], fragment: str) -> None:
    code, text = invoke("proxy", *args)
    assert code == 1 and fragment in flat(text), text
    assert "(none given)" not in text


def test_leaderboard_run_refuses_an_empty_ray_address(tmp_path: Path) -> None:
    board = tmp_path / "board.yaml"
    board.write_text(
        "name: demo\nmodels: {m: {kind: scripted}}\ndatasets: {g: gsm8k}\nentries: [{strategy: single}]\n"
    )
    code, text = invoke("leaderboard", "run", str(board), "--ray", "")
    assert code == 1 and "--ray '' is empty" in flat(text), text


# -- view: run records of a known format -------------------------------------------------------------


def test_view_refuses_lines_that_are_not_run_records_or_of_an_unknown_format(tmp_path: Path) -> None:
    from reasoning.evals.view import read_records

    good = Run(problem_id="a").model_dump_json()
    other = tmp_path / "other.jsonl"
    other.write_text(good + "\n" + json.dumps({"problem_id": "b", "text": "hello"}) + "\n")
    with pytest.raises(DatasetError) as raised:
        read_records(other)
    assert str(raised.value).startswith(f"{other}:2: not a run record: no format_version field")
    assert "(its fields: problem_id, text)" in str(raised.value)
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"format_version": FORMAT_VERSION + 1, "problem_id": "a"}) + "\n")
    with pytest.raises(
        DatasetError, match=rf"newer.jsonl:1: a run record of unknown format_version {FORMAT_VERSION + 1}"
    ):
        read_records(newer)
    code, text = invoke("view", str(newer))
    assert code == 1 and f"reads versions 1 to {FORMAT_VERSION}" in flat(text), text
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"format_version": 1, "problem_id": "a"}) + "\n")
    assert [r.problem_id for r in read_records(old).runs] == ["a"]  # older formats still read
    whole = tmp_path / "one.json"
    whole.write_text(json.dumps([{"problem_id": "a"}, {"problem_id": "b"}], indent=1))
    with pytest.raises(DatasetError, match="one.json: item 0: not a run record: no format_version"):
        read_records(whole)
    cut = tmp_path / "cut.jsonl"
    cut.write_text(good + "\n" + json.dumps({"problem_id": "b"}))  # complete JSON, no newline: no record
    with pytest.raises(DatasetError, match="cut.jsonl:2: not a run record"):
        read_records(cut)


@pytest.mark.browser
def test_the_page_says_not_graded_instead_of_none_right(tmp_path: Path) -> None:
    import re

    from test_view import draw

    from reasoning.evals.view import Records, html_page

    def summary(runs: list[Run]) -> str:
        page = tmp_path / "page.html"
        page.write_text(html_page(Records(Path("r.jsonl"), runs)))
        found = re.search(r'<span class="summary" id="summary">([^<]*)</span>', draw(page)[1])
        assert found is not None
        return found[1]

    assert summary([Run(problem_id=f"p{i}") for i in range(3)]).startswith("3 records · not graded ·")
    mixed = [Run(problem_id="a", correct=True), Run(problem_id="b", correct=False), Run(problem_id="c")]
    assert summary(mixed).startswith("3 records · 1 right of 2, 1 not graded ·")


# -- solve's scripted backend: --model names it, several named ones are a group ----------------------


def test_solve_serves_a_scripted_model_group_named_by_model(tmp_path: Path) -> None:
    """`--backend scripted --model draft=a --model target=b` runs spec-reason on two scripted
    backends, as the proxy's group does (it was refused: "give them with --model draft=...")."""
    out = tmp_path / "sr.jsonl"
    code, text = invoke(
        "solve", "--question", "2+2?", "--backend", "scripted", "--strategy", "spec-reason",
        "--model", "draft=a", "--model", "target=b", "--output", str(out),
    )  # fmt: skip
    assert code == 0, text
    run = Run.model_validate_json(out.read_text().splitlines()[0])
    assert run.backends == {"draft": "a", "target": "b"} and set(run.usage_by_backend) == {"draft", "target"}
    one = tmp_path / "one.jsonl"
    code, text = invoke(
        "solve", "--question", "2+2?", "--backend", "scripted", "--model", "m", "--output", str(one)
    )
    assert code == 0, text
    assert Run.model_validate_json(one.read_text().splitlines()[0]).model == "m"  # not dropped


# -- proxy: a strategy the served backend cannot run is the client's 400, not a 500 ------------------


async def test_proxy_answers_a_strategy_needing_hidden_states_it_lacks_with_a_400(tmp_path: Path) -> None:
    import httpx
    from test_proxy import serving

    from reasoning import CapabilityError
    from reasoning.serving.proxy import _refusal

    async with serving(ScriptedBackend(["\\boxed{4}"]), tmp_path) as url, httpx.AsyncClient() as http:
        reply = await http.post(
            f"{url}/chat/completions",
            json={"model": "lt-select@m", "messages": [{"role": "user", "content": "2+2?"}]},
        )
        metrics = (await http.get(url.removesuffix("/v1") + "/metrics")).text
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "capability_unavailable", error
    assert "cannot give hidden states" in error["message"]
    assert 'reasoning_proxy_requests_total{status="400",strategy="lt-select"} 1.0' in metrics
    engine = CapabilityError(
        "hidden states (this engine was loaded with hidden_states=False)", "vllm", "vllm"
    )
    assert "start the proxy with --hidden-states" in str(_refusal(engine))
