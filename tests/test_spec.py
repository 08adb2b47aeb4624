"""The run spec: `solve --config`, flags over it, the record keeps it, resume identity from it."""

import json
from pathlib import Path

import pytest
from conftest import invoke

from reasoning import Budget, ConfigError, Controller, ScriptedBackend
from reasoning.cli import main
from reasoning.cli import solve as cli
from reasoning.cli.solve import spec_of
from reasoning.evals.run import check_resumable, read_results
from reasoning.evals.spec import RunSpec, ScriptedReply, ServerBackend, VLLMEngine
from reasoning.record import FORMAT_VERSION


def no_backend(*args: object, **kwargs: object) -> None:
    raise AssertionError("a backend was started")


def flags(**given: object) -> dict[str, object]:
    """Every solve option at its command-line default, `given` ones set."""
    import inspect

    names = inspect.signature(cli.solve).parameters
    return {name: given.get(name) for name in names}


def test_a_spec_file_with_flags_over_it(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "backends:\n"
        "  draft: {model: 0.5b, kv_cache_gb: 1.5}\n"
        "  target: qwen2.5-coder-1.5b-instruct\n"
        "strategy: self-consistency\n"
        "params: {n: 8, temperature: 0.5}\n"
        "budget: {output_tokens: 4000}\n"
        "budgets: {draft: {calls: 3}}\n"
        "dataset: gsm8k\n"
        "seed: 7\n"
    )
    spec = spec_of(path, flags(param=["n=2"], limit=3, dtype="float32", budget_tokens=500))
    assert spec.params == {"n": "2", "temperature": 0.5} and spec.budget == Budget(output_tokens=500)
    assert spec.dataset is not None and (spec.dataset.name, spec.dataset.limit) == ("gsm8k", 3)
    draft, target = spec.backends["draft"], spec.backends["target"]
    assert isinstance(draft, VLLMEngine) and isinstance(target, VLLMEngine)
    assert (draft.kv_cache_gb, draft.dtype, draft.seed) == (1.5, "float32", 7)  # the run's seed
    assert (target.kv_cache_gb, target.dtype) == (2.0, "float32")
    assert spec.budgets == {"draft": Budget(calls=3)}
    assert spec.models() == {"draft": "qwen2.5-coder-0.5b-instruct", "target": "qwen2.5-coder-1.5b-instruct"}
    other = spec_of(path, flags(strategy="best-of-n", question="2+2?"))  # another strategy: no params
    assert other.params == {} and other.dataset is None and other.question == "2+2?"
    with pytest.raises(ConfigError, match=r"budgets name unknown backends \['draft'\]"):
        spec_of(path, flags(backend="scripted", question="2+2?"))  # --backend replaces the named ones
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps({"question": "q", "backend": "http://127.0.0.1:9", "strategy": "single"}))
    served = spec_of(json_path, flags(model=["m"]))
    assert isinstance(served.backend, VLLMEngine) and served.backend.model == "m"  # --model replaces it
    served = spec_of(json_path, flags())
    assert isinstance(served.backend, ServerBackend) and served.backend.url == "http://127.0.0.1:9"
    scripted = spec_of(json_path, flags(backend="scripted", model=["d=x", "t=y"]))
    # name=model flags over the scripted backend serve a scripted model group (as the proxy does)
    assert scripted.backend is None and set(scripted.backends) == {"d", "t"}
    assert all(isinstance(b, ScriptedReply) for b in scripted.backends.values())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "backends: {a: {model: x, kv_cache_gb: -1}}\nquestion: q\n",
            "backends.a.kv_cache_gb must be greater than 0",
        ),
        ("backend: {dtype: int3}\nquestion: q\n", "backend.dtype 'int3' is not one of auto"),
        (
            "backend: {kind: tpu}\nquestion: q\n",
            "backend.kind 'tpu' is not one of 'vllm', 'openai', 'scripted'",
        ),
        ("question: q\nbudget: {tokens: 5}\n", "budget line 'tokens' is not one of output_tokens"),
        ("question: q\nbudgets: {draft: {calls: 2}}\n", "budgets name unknown backends ['draft']"),
        ("question: q\ndataset: gsm8k\n", "exactly one of --dataset or --question"),
        ("dataset: {name: gsm8k, offset: -2}\n", "dataset.offset must be greater than or equal to 0"),
        ("question: q\nstrategy_name: single\n", "strategy_name is not a known setting"),
        ("- question\n", "expected a mapping of settings, got list"),
        ("question: [\n", "not valid YAML"),
    ],
)
def test_a_bad_spec_file_is_one_clear_line(
    text: str,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    monkeypatch.setattr("sys.argv", ["reasoning", "solve", "--config", str(path)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err


def test_the_record_stores_the_spec_without_the_api_key(tmp_path: Path) -> None:
    path, out = tmp_path / "run.yaml", tmp_path / "r.jsonl"
    path.write_text(
        "backend: {kind: scripted, script: '\\boxed{18}'}\n"
        "strategy: self-consistency\nparams: {n: 2}\n"
        "dataset: {name: gsm8k, limit: 2}\n"
        f"output: {out}\n"
    )
    code, text = invoke("solve", "--config", str(path), "--seed", "3")
    assert code == 0, text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["format_version"] for r in rows] == [FORMAT_VERSION] * 2
    spec = RunSpec.model_validate(rows[0]["spec"])  # a stored spec is a spec again
    assert spec.seed == 3 and spec.params == {"n": 2} and spec.dataset and spec.dataset.limit == 2
    assert isinstance(spec.backend, ScriptedReply) and spec.backend.script == "\\boxed{18}"
    assert rows[0]["params"]["n"] == 2 and rows[0]["seed"] == 3
    secret = RunSpec.model_validate({"question": "q", "backend": {"url": "http://h", "api_key": "SECRET"}})
    assert "SECRET" not in json.dumps(secret.record())


def test_the_spec_identity_is_the_identity_the_records_carry(tmp_path: Path) -> None:
    """Computed from the spec alone, it equals what a run on real backends writes."""
    import reasoning.strategies  # noqa: F401
    from reasoning import STRATEGIES

    strategy = STRATEGIES.create("self-consistency", {"n": "2"})
    problems = [__import__("reasoning").Problem("p", "2+2?", "4")]
    cases = [
        (
            RunSpec(question="q", backend={"kind": "scripted"}, budget={"calls": 4}, seed=5),
            ScriptedBackend(["\\boxed{4}"]),
        ),
        (
            RunSpec(question="q", backends={"d": "0.5b", "t": "1.5b"}, budgets={"d": {"calls": 2}}, seed=5),
            {
                "d": ScriptedBackend(["\\boxed{4}"], model="qwen2.5-coder-0.5b-instruct"),
                "t": ScriptedBackend(["\\boxed{4}"], model="qwen2.5-coder-1.5b-instruct"),
            },
        ),
        (
            RunSpec(question="q", prm="/models/prm", seed=5),
            {
                "policy": ScriptedBackend(["\\boxed{4}"], model="qwen2.5-coder-0.5b-instruct"),
                "prm": ScriptedBackend(["-"], model="/models/prm"),
            },
        ),
    ]
    for number, (spec, backends) in enumerate(cases):
        out = tmp_path / f"{number}.jsonl"
        controller = Controller(backends, budget=spec.budget, seed=spec.seed, budgets=spec.budgets)
        run = controller.run_sync(problems[0], strategy)
        out.write_text(run.model_dump_json() + "\n")
        check_resumable(out, problems, controller, strategy, spec.budget)  # the controller agrees ...
        from reasoning.evals.run import unfinished

        assert unfinished(out, problems, spec.identity(strategy)) == []  # ... and so does the spec
        changed = spec.model_copy(update={"seed": 6})
        with pytest.raises(ConfigError, match="different seed"):
            unfinished(out, problems, changed.identity(strategy))


def test_a_rerun_with_nothing_left_to_do_starts_no_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r.jsonl"
    args = ["solve", "--dataset", "gsm8k", "--limit", "3", "-p", "n=2", "--output", str(out)]
    engine = ScriptedBackend(["\\boxed{18}"], model="qwen2.5-coder-0.5b-instruct")  # stands for the engine
    monkeypatch.setattr(cli, "launch_all", lambda spec, hidden_states: engine)
    code, text = invoke(*args)
    assert code == 0, text
    assert len(read_results(out)) == 3
    monkeypatch.setattr(cli, "launch_all", no_backend)
    monkeypatch.setattr("reasoning.backends.vllm_local.VLLMBackend.from_config", no_backend)
    code, text = invoke(*args)
    assert code == 0, text
    flat = " ".join(text.split())
    assert "nothing left to do" in flat and "no engine started" in flat and "1/3" in flat
    code, text = invoke(*args[:4], "2", *args[5:])  # fewer problems: all done as well
    assert code == 0 and "nothing left to do" in text, text
    code, text = invoke(*args[:4], "4", *args[5:])  # one more: the engine is needed
    assert code == 1 and "a backend was started" in text


def test_records_of_format_version_1_still_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.jsonl"
    args = ["solve", "--dataset", "gsm8k", "--limit", "2", "--backend", "scripted", "--output", str(out)]
    code, text = invoke(*args)
    assert code == 0, text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row in rows:  # as version 1 wrote them: no spec
        del row["spec"]
        row["format_version"] = 1
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setattr(cli, "launch_all", no_backend)
    code, text = invoke(*args)
    assert code == 0 and "nothing left to do" in text, text
    assert [r.format_version for r in read_results(out).values()] == [1, 1]


def test_every_engine_starts_from_its_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reasoning.backends.vllm_local as local
    from reasoning.config import EngineConfig

    started: list[EngineConfig] = []

    def start(config: EngineConfig, progress: object = None) -> ScriptedBackend:
        started.append(config)
        return ScriptedBackend(["\\boxed{1}"], model=config.model or "default")

    monkeypatch.setattr(local.VLLMBackend, "from_config", staticmethod(start))
    monkeypatch.setattr(local, "resolve_model", lambda model=None, progress=None, **_: "/models/m")
    monkeypatch.setattr(local, "check_memory", lambda *args, **kwargs: None)
    monkeypatch.setattr(local, "on_gpu", lambda: False)
    monkeypatch.setattr(
        "reasoning.cli.common.resolve_with_progress", lambda model, trust_remote_code=False: None
    )
    base = ["solve", "--question", "q", "--strategy", "single"]
    code, text = invoke(*base, "--model", "0.5b", "--kv-cache-gb", "1", "--seed", "4", "--block-size", "32")
    assert code == 0, text
    assert started == [EngineConfig(model="0.5b", kv_cache_gb=1.0, seed=4, block_size=32)]
    path = tmp_path / "run.yaml"
    path.write_text("backends:\n  draft: {model: d, kv_cache_gb: 1.5, seed: 9}\n  target: t\nquestion: q\n")
    started.clear()
    code, text = invoke("solve", "--config", str(path), "--dtype", "float32", "--seed", "3")
    assert code == 0, text
    assert started == [
        EngineConfig(model="d", kv_cache_gb=1.5, seed=9, dtype="float32"),
        EngineConfig(model="t", seed=3, dtype="float32"),
    ]


def test_a_server_is_asked_its_model_before_the_resume_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str | None]] = []

    def server(url: str, model: str | None, api_key: str) -> ScriptedBackend:
        calls.append((url, model))
        return ScriptedBackend(["\\boxed{18}"], model=model or "served-model")

    monkeypatch.setattr(
        "reasoning.backends.start._server", lambda spec: server(spec.url, spec.model, spec.api_key)
    )
    out = tmp_path / "r.jsonl"
    args = ["solve", "--dataset", "gsm8k", "--limit", "2", "--base-url", "http://h:1", "--output", str(out)]
    code, text = invoke(*args)
    assert code == 0, text
    assert calls == [("http://h:1", None), ("http://h:1", "served-model")]  # asked, then used
    assert {r.model for r in read_results(out).values()} == {"served-model"}
    assert RunSpec.model_validate(next(iter(read_results(out).values())).spec).models() == {
        "": "served-model"
    }
    calls.clear()
    code, text = invoke(*args)
    assert code == 0 and "nothing left to do" in text and calls == [("http://h:1", None)], text
    calls.clear()
    code, text = invoke(*args, "--model", "served-model")  # named: not even asked
    assert code == 0 and "nothing left to do" in text and calls == [], text
    code, text = invoke(*args, "--model", "other")
    assert code == 1 and "different model" in " ".join(text.split())
