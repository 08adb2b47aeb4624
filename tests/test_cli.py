import json
import re
from pathlib import Path

import pytest
from conftest import invoke

from reasoning.cli import main


def test_solve_dataset_writes_results_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    args = [
        "solve",
        "--dataset",
        "gsm8k",
        "--limit",
        "3",
        "--backend",
        "scripted",
        "--script",
        "\\boxed{18}",
        "-p",
        "n=2",
        "--output",
        str(out),
    ]
    code, text = invoke(*args)
    assert code == 0, text
    assert "accuracy" in text and "1/3" in text
    # E^3 = A^2 / T: 33.3% right, two one-token samples per problem: 33.3^2 / 2 = 556
    assert re.search(r"E\^3 = accuracy%² / mean tokens\s*│\s*556 │", text), text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, False, False]
    code, text = invoke(*args[:4], "5", *args[5:])
    assert code == 0 and len(out.read_text().splitlines()) == 5


def test_replies_with_unicode_line_separators_read_back_and_resume(tmp_path: Path) -> None:
    """U+2028, U+2029 and NEL are legal unescaped in JSON strings; a row holding them is one row."""
    out = tmp_path / "r.jsonl"
    args = ["solve", "--dataset", "gsm8k", "--limit", "2", "--backend", "scripted"]
    args += ["--script", "Step\u2028two\u2029three\u0085. \\boxed{18}", "--output", str(out)]
    code, text = invoke(*args)
    assert code == 0, text
    assert "\u2028" in out.read_text(encoding="utf-8")  # written unescaped: the reader must cope
    code, text = invoke(*args[:4], "3", *args[5:])  # resumes: reads the two rows, adds one
    assert code == 0, text
    assert len(out.read_text(encoding="utf-8").split("\n")) == 4  # three rows and the final newline
    code, text = invoke("view", str(out), "--output", str(tmp_path / "r.html"))
    assert code == 0, text


def test_solve_question_prints_answer() -> None:
    code, text = invoke(
        "solve",
        "--question",
        "2+2?",
        "--backend",
        "scripted",
        "--script",
        "\\boxed{4}",
        "--strategy",
        "single",
    )
    assert code == 0, text
    assert "answer: 4" in text


def test_strategies_lists_parameters() -> None:
    code, text = invoke("strategies")
    assert code == 0 and "self-consistency" in text and "temperature" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "gsm9k"], "unknown dataset 'gsm9k'; choose one of"),
        (["--dataset", "gsm8k", "--strategy", "nope"], "unknown strategy 'nope'; choose one of"),
        (["--dataset", "gsm8k", "-p", "m=1"], "has no parameter 'm'"),
        (["--dataset", "gsm8k", "-p", "n"], "not of the form name=value"),
        (["--dataset", "gsm8k", "--budget-tokens", "0"], "output_tokens must be > 0"),
        ([], "exactly one of --dataset or --question"),
        (["--question", "q", "--budget-line", "draft=3"], "is not name.line with line one of"),
        (["--question", "q", "--budget-line", "draft.tokens=3"], "is not name.line with line one of"),
        (["--question", "q", "--budget-line", "draft.calls=x"], "is not a number"),
        (["--question", "q", "--model", "0.5b", "--model", "1.5b"], "give one --model, or several"),
        (["--question", "q", "--prm", "/models/prm"], "--prm starts an in-process pooling engine"),
        (["--question", "q", "--model", "a=0.5b", "--model", "a=1.5b"], "names 'a' twice"),
        (
            ["--question", "q", "--backend", "openai", "--base-url", "http://127.0.0.1:9", "--model", "d=x"],
            "several named --model need as many named --base-url",
        ),
        (
            ["--question", "q", "--backend", "openai", "--base-url", "http://127.0.0.1:1"],
            "cannot reach the server at http://127.0.0.1:1",
        ),
    ],
)
def test_bad_input_is_one_clear_line(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.argv", ["reasoning", "solve", "--backend", "scripted", *args])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert "Traceback" not in err


def test_a_results_file_of_other_settings_is_refused_before_any_engine_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r.jsonl"
    base = ["solve", "--dataset", "gsm8k", "--limit", "2", "--output", str(out)]
    code, text = invoke(*base, "--backend", "scripted")
    assert code == 0, text

    def no_engine(*args: object, **kwargs: object) -> None:
        raise AssertionError("the engine was started before the resume check")

    monkeypatch.setattr("reasoning.backends.vllm_local.VLLMBackend.load", no_engine)
    code, text = invoke(*base, "--model", "0.5b")
    assert code == 1 and "holds results of another configuration (different model)" in " ".join(text.split())


def test_prm_is_served_beside_the_policy_as_backend_prm(monkeypatch: pytest.MonkeyPatch) -> None:
    from reasoning import ScriptedBackend
    from reasoning.cli import solve as cli

    def policy(request, number):
        return "s1\n\nmore" if not request.prefix else "so \\boxed{7}"

    prm = ScriptedBackend(["unused"], rewards=lambda r: [0.5] * r.messages[-1].content.count("<extra_0>"))
    started: list[tuple[str, str]] = []
    monkeypatch.setattr(cli, "launch_all", lambda *args, **kwargs: ScriptedBackend(policy))
    monkeypatch.setattr(
        "reasoning.cli.common.start_reward", lambda model, name: started.append((name, model)) or prm
    )
    code, text = invoke(
        "solve",
        "--question",
        "q",
        "--strategy",
        "beam",
        "-p",
        "scorer=prm",
        "-p",
        "n=2",
        "-p",
        "width=2",
        "--prm",
        "/models/prm",
    )
    assert code == 0, text
    assert started == [("prm", "/models/prm")] and "7" in text
    assert "process scorer calls" in text and "step prompt tokens cached" in text
    assert len(prm.reward_requests) == 4  # two first steps, two second steps


def test_baseline_runs_beside_the_strategy_and_both_are_summed_up(tmp_path: Path) -> None:
    out = tmp_path / "sc.jsonl"
    code, text = invoke(
        "solve",
        "--dataset",
        "gsm8k",
        "--limit",
        "3",
        "--backend",
        "scripted",
        "--script",
        "\\boxed{18}",
        "-p",
        "n=3",
        "--baseline",
        "single:max_tokens=64",
        "--output",
        str(out),
    )
    assert code == 0, text
    flat = " ".join(text.split())
    assert "single:max_tokens=64 (baseline)" in flat and "self-consistency n=3" in flat
    assert flat.count("1/3 = 33%") == 2  # one accuracy per column, with its interval
    main_rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["strategy"] for r in main_rows} == {"self-consistency"}
    assert [r["usage"]["samples"] for r in main_rows] == [3, 3, 3]
    baseline_rows = (tmp_path / "sc-single-baseline.jsonl").read_text().splitlines()  # beside --output
    assert [json.loads(line)["strategy"] for line in baseline_rows] == ["single"] * 3


def test_baseline_and_strategy_get_their_own_results_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["solve", "--dataset", "gsm8k", "--limit", "2", "--backend", "scripted", "--baseline", "single"]
    code, text = invoke(*args)
    assert code == 0, text
    files = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert files == ["gsm8k-self-consistency.jsonl", "gsm8k-single-baseline.jsonl"]
    code, text = invoke(*args[:-2], "--strategy", "single", "--baseline", "single")
    assert code == 0, text
    files = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert files == ["gsm8k-self-consistency.jsonl", "gsm8k-single-baseline.jsonl", "gsm8k-single.jsonl"]


def test_import_adds_a_user_strategy_to_strategies_and_solve(tmp_path: Path) -> None:
    from reasoning import STRATEGIES

    module = tmp_path / "user_strategies.py"
    module.write_text(
        "from dataclasses import dataclass\n"
        "from reasoning import STRATEGIES, Result\n\n"
        '@STRATEGIES.register("always-seven-cli")\n'
        "@dataclass(frozen=True)\n"
        "class AlwaysSeven:\n"
        '    """Answers 7."""\n\n'
        "    async def __call__(self, problem, ctx):\n"
        '        return Result(answer="7")\n'
    )
    classes, aliases = dict(STRATEGIES._classes), dict(STRATEGIES._aliases)
    try:
        code, text = invoke(
            "solve", "--strategy", "always-seven-cli", "--question", "3+4?", "--backend", "scripted"
        )
        assert code != 0 and "always-seven-cli" in text  # unknown without --import
        code, text = invoke("strategies", "--import", str(module))
        assert code == 0 and "always-seven-cli" in text, text
        args = ["solve", "--import", str(module), "--strategy", "always-seven-cli", "--question", "3+4?"]
        code, text = invoke(
            *args, "--gold", "7", "--backend", "scripted", "--output", str(tmp_path / "r.jsonl")
        )
        assert code == 0 and "answer: 7" in text, text
    finally:
        STRATEGIES._classes, STRATEGIES._aliases = classes, aliases
