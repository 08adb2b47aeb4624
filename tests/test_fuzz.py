"""Fuzzing the inputs: every bad file, spec, flag or artefact ends in one clear error, nothing written.

An error is clear when it is a `ReasoningError` raised by the API, or the CLI's ``error: ...``
line with exit code 1 (no traceback); no failing case leaves a partial output file behind.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_probes import hand_probe

from reasoning.engine.models import resolve_model
from reasoning.errors import ConfigError, ReasoningError
from reasoning.evals.datasets import load_dataset
from reasoning.evals.leaderboard.spec import LeaderboardSpec, read_leaderboard
from reasoning.evals.leaderboard.store import Store
from reasoning.evals.run import read_results
from reasoning.evals.spec import RunSpec, read_spec
from reasoning.probes.probe import Probe, ProbeMismatch

settings.register_profile("fuzz", max_examples=25, deadline=None, derandomize=True)
FUZZ = settings(
    settings.get_profile("fuzz"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def clear_cli_error(code: int, text: str) -> None:
    """One ``error: ...`` line, exit code 1, no traceback."""
    assert code == 1, text
    assert "error" in text.lower(), text
    assert "Traceback" not in text, text


def solve_args(*args: str) -> tuple[str, ...]:
    return ("solve", "--backend", "scripted", "--script", "so \\boxed{4}", *args)


# -- dataset files ----------------------------------------------------------------------------

BAD_DATASETS: dict[str, bytes] = {
    "truncated line": b'{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "ans',
    "wrong type (list)": b"[1, 2, 3]\n",
    "wrong type (string)": b'"just a string"\n',
    "missing question": b'{"answer": "2"}\n',
    "binary garbage": bytes(range(256)) * 4,
    "non-UTF-8": '{"question": "caf\u00e9?", "answer": "1"}\n'.encode("latin-1"),
    "huge line": b'{"question": "' + b"x" * 2_000_000 + b'", "answer": ',
    "empty file": b"",
    "only blank lines": b"\n\n  \n",
}


@pytest.mark.parametrize("case", sorted(BAD_DATASETS))
def test_a_bad_dataset_is_one_clear_error(case: str, tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(BAD_DATASETS[case])
    out = tmp_path / "out.jsonl"
    with pytest.raises(ReasoningError) as info:
        load_dataset(str(path))
    assert str(path) in str(info.value) or "empty" in str(info.value) or "no problems" in str(info.value)
    code, text = invoke(*solve_args("--dataset", str(path), "--output", str(out)))
    clear_cli_error(code, text)
    assert not out.exists()


@FUZZ
@given(lines=st.lists(st.binary(max_size=40) | st.text(max_size=40).map(str.encode), min_size=1, max_size=4))
def test_random_dataset_bytes_load_or_fail_clearly(lines: list[bytes], tmp_path: Path) -> None:
    path = tmp_path / "random.jsonl"
    path.write_bytes(b"\n".join(lines))
    try:
        problems = load_dataset(str(path))
    except ReasoningError:
        return
    assert all(isinstance(p.question, str) for p in problems)


# -- run specs and leaderboard specs ----------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
KEYS = st.sampled_from(
    ["strategy", "params", "budget", "budgets", "dataset", "backend", "backends", "seed", "output", "limit"]
)
VALID_RUN = {
    "strategy": "self-consistency",
    "params": {"n": 2},
    "dataset": {"name": "gsm8k", "limit": 1},
    "budget": {"output_tokens": 100},
    "backend": {"kind": "scripted", "script": "\\boxed{4}"},
}


def validate_run(data: object) -> None:
    with contextlib.suppress(ReasoningError):
        RunSpec.model_validate(data)


@FUZZ
@given(data=st.dictionaries(KEYS | st.text(max_size=8), json_values, max_size=5))
def test_random_run_specs_validate_or_fail_clearly(data: dict[str, object]) -> None:
    validate_run(data)


@FUZZ
@given(key=KEYS, value=json_values)
def test_mutated_valid_run_specs_validate_or_fail_clearly(key: str, value: object) -> None:
    validate_run({**VALID_RUN, key: value})


@FUZZ
@given(text=st.text(max_size=80), suffix=st.sampled_from([".yaml", ".json"]))
def test_random_spec_files_read_or_fail_clearly(text: str, suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"spec{suffix}"
    path.write_text(text, encoding="utf-8")
    for read in (read_spec, read_leaderboard):
        with contextlib.suppress(ReasoningError):
            read(path)


def test_spec_files_that_are_not_text_fail_clearly(tmp_path: Path) -> None:
    for suffix in (".yaml", ".json"):
        path = tmp_path / f"spec{suffix}"
        path.write_bytes(b"\xff\xfe\x00garbage")
        for read in (read_spec, read_leaderboard):
            with pytest.raises(ConfigError, match="spec"):
                read(path)
    code, text = invoke("solve", "--config", str(path), "--backend", "scripted")
    clear_cli_error(code, text)


VALID_BOARD = {
    "name": "fuzz",
    "models": {"m": {"kind": "scripted", "script": "\\boxed{4}"}},
    "datasets": {"g": {"name": "gsm8k", "limit": 1}},
    "entries": [{"name": "single", "strategy": "single"}],
}


def test_the_valid_leaderboard_is_valid(tmp_path: Path) -> None:
    """The base the fuzzing below mutates validates and runs (else every case is trivially refused)."""
    LeaderboardSpec.model_validate(VALID_BOARD)
    config = tmp_path / "board.yaml"
    config.write_text(yaml.safe_dump(VALID_BOARD), encoding="utf-8")
    code, text = invoke("leaderboard", "run", str(config), "--store", str(tmp_path / "store.sqlite"))
    assert code == 0, text


@FUZZ
@given(data=st.dictionaries(st.sampled_from([*VALID_BOARD, "budget", "seeds", "x"]), json_values, max_size=4))
def test_random_leaderboard_specs_validate_or_fail_clearly(data: dict[str, object]) -> None:
    for candidate in (data, {**VALID_BOARD, **data}):
        with contextlib.suppress(ReasoningError):
            LeaderboardSpec.model_validate(candidate)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(key=st.sampled_from([*VALID_BOARD, "budget", "seeds", "x"]), value=json_values)
def test_mutated_leaderboard_files_through_the_cli(key: str, value: object) -> None:
    """A leaderboard file with one setting replaced runs, or fails with one clear error before
    anything is stored (no store, or an intact one)."""
    with tempfile.TemporaryDirectory() as tmp:
        config, store = Path(tmp) / "board.yaml", Path(tmp) / "store.sqlite"
        config.write_text(yaml.safe_dump({**VALID_BOARD, key: value}), encoding="utf-8")
        code, text = invoke("leaderboard", "run", str(config), "--store", str(store))
        assert "Traceback" not in text, text
        if code != 0:
            clear_cli_error(code, text)
            if store.exists():  # opened before the error: still a readable store
                with Store.open(store, create=False) as opened:
                    opened.cells()
        code, text = invoke("leaderboard", "report", str(config), "--store", str(store), "--out", tmp)
        assert "Traceback" not in text and (code == 0 or "error" in text.lower()), text


# -- CLI parameters ---------------------------------------------------------------------------

SPEC_ALPHABET = "abcdefghijklmnopqrstuvwxyz-_@:=,()[]\"' 0123456789."


@settings(max_examples=15, deadline=None, derandomize=True)
@given(spec=st.text(alphabet=SPEC_ALPHABET, max_size=30))
def test_random_strategy_specs_through_the_cli(spec: str) -> None:
    code, text = invoke(*solve_args("--question", "2+2?", "-s", spec))
    assert "Traceback" not in text and code in (0, 1), text
    if code == 1:
        clear_cli_error(code, text)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(name=st.text(alphabet=SPEC_ALPHABET, max_size=12), value=st.text(max_size=12))
def test_random_params_through_the_cli(name: str, value: str) -> None:
    code, text = invoke(*solve_args("--question", "2+2?", "-s", "sc", "-p", f"{name}={value}"))
    assert "Traceback" not in text and code in (0, 1, 2), text
    if code == 1:
        clear_cli_error(code, text)


@pytest.mark.parametrize("value", ["-1", "0", "nan", "NaN", "inf", "-inf", "1e400", "abc", "1.5"])
@pytest.mark.parametrize("line", ["tokens", "calls", "prompt-tokens", "seconds"])
def test_bad_budget_flags_are_refused_clearly(line: str, value: str) -> None:
    code, text = invoke(*solve_args("--question", "2+2?", "-s", "single", f"--budget-{line}", value))
    if code == 0:  # a value a line accepts (1.5 seconds, a huge float)
        assert line == "seconds" and value in ("1.5", "1e400", "inf"), text
        return
    assert "Traceback" not in text, text
    assert code in (1, 2), text  # 2: typer's own usage error (not a number)


def test_a_huge_budget_is_no_crash() -> None:
    code, text = invoke(*solve_args("--question", "2+2?", "-s", "single", "--budget-tokens", str(10**30)))
    assert code in (0, 1) and "Traceback" not in text, text


# -- results files and leaderboard stores -----------------------------------------------------


def test_a_corrupt_results_file_is_an_error_and_left_untouched(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    code, text = invoke(*solve_args("--question", "2+2?", "-s", "single", "--output", str(out)))
    assert code == 0, text
    good = out.read_bytes()
    for damage in (b"{not json\n" + good, b"\xff\xfe\x00\n" + good, good[:-20] + b"\n" + good):
        out.write_bytes(damage)
        with pytest.raises(ReasoningError):
            read_results(out)
        code, text = invoke(*solve_args("--question", "2+2?", "-s", "single", "--output", str(out)))
        clear_cli_error(code, text)
        assert out.read_bytes() == damage


@pytest.mark.parametrize(
    "content",
    [b"", b"not a database at all", b"SQLite format 3\x00" + b"\x00" * 80, bytes(range(256)) * 64],
)
def test_a_corrupt_store_is_an_error_and_left_untouched(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "board.sqlite"
    path.write_bytes(content)
    try:
        Store.open(path).close()
    except ReasoningError:
        assert path.read_bytes() == content
    else:  # only an empty file is a store SQLite can start afresh
        assert content == b""


def test_a_store_with_flipped_bytes_is_an_error_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "board.sqlite"
    Store.open(path).close()
    data = bytearray(path.read_bytes())
    for i in range(100, len(data), 97):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with contextlib.suppress(ReasoningError):
        Store.open(path).close()
    assert path.read_bytes() == bytes(data)


# -- probe artefacts --------------------------------------------------------------------------


def test_damaged_probe_artefacts_are_refused_at_load(tmp_path: Path) -> None:
    from reasoning.engine.models import fingerprint

    card = Path(hand_probe(tmp_path))
    weights = card.with_suffix(".safetensors")
    Probe.load(card, fingerprint("scripted"))  # intact: loads
    with pytest.raises(ProbeMismatch):
        Probe.load(card, fingerprint("another-model"))
    original_card, original_weights = card.read_bytes(), weights.read_bytes()
    damages = {
        "weights truncated": (weights, original_weights[: len(original_weights) // 2]),
        "weights byte flipped": (weights, original_weights[:-1] + bytes([original_weights[-1] ^ 1])),
        "card truncated": (card, original_card[: len(original_card) // 2]),
        "card not UTF-8": (card, b"\xff" + original_card),
        "card a list": (card, b"[1, 2]"),
        "card missing fields": (card, json.dumps({"format": json.loads(original_card)["format"]}).encode()),
    }
    for what, (path, content) in damages.items():
        path.write_bytes(content)
        with pytest.raises(ReasoningError):
            Probe.load(card, fingerprint("scripted"))
        card.write_bytes(original_card)
        weights.write_bytes(original_weights)
        assert what


def test_a_truncated_probe_without_a_recorded_hash_is_refused(tmp_path: Path) -> None:
    card = Path(hand_probe(tmp_path))
    document = json.loads(card.read_text())
    document.pop("weights_sha256")
    card.write_text(json.dumps(document))
    weights = card.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:10])
    with pytest.raises(ReasoningError):
        Probe.load(card)


# -- model folders asking for remote code -----------------------------------------------------


def remote_code_folder(tmp_path: Path, where: str = "config.json") -> Path:
    folder = tmp_path / "tricky-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    existing = json.loads((folder / where).read_text()) if (folder / where).exists() else {}
    asks = {"auto_map": {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}}
    (folder / where).write_text(json.dumps({**existing, **asks}))
    (folder / "modeling_evil.py").write_text("raise SystemExit('this must never run')\n")
    return folder


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to start an engine or a server fails the test (none may start here)."""
    from reasoning.backends import vllm_local
    from reasoning.serving import server

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an engine was about to start")

    monkeypatch.setattr(vllm_local.VLLMBackend, "from_config", classmethod(refuse))
    monkeypatch.setattr(vllm_local, "load_backends", refuse)
    monkeypatch.setattr(server.VLLMServer, "start", refuse)


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_a_model_folder_asking_for_remote_code_is_refused(
    where: str, tmp_path: Path, no_engine: None
) -> None:
    folder = remote_code_folder(tmp_path, where)
    with pytest.raises(ConfigError, match="asks to run its own code.*--trust-remote-code"):
        resolve_model(str(folder))
    assert resolve_model(str(folder), trust_remote_code=True) == str(folder.resolve())
    code, text = invoke("solve", "--question", "2+2?", "--model", str(folder), "-s", "single")
    clear_cli_error(code, text)
    assert "--trust-remote-code" in text
    code, text = invoke("serve", "--model", str(folder))
    clear_cli_error(code, text)
    code, text = invoke("proxy", "--model", str(folder), "--port", "0")
    clear_cli_error(code, text)
    assert "--trust-remote-code" in text


def test_trust_remote_code_is_passed_on_when_asked(tmp_path: Path, no_engine: None) -> None:
    from reasoning.config import EngineConfig
    from reasoning.serving.server import VLLMServer

    folder = remote_code_folder(tmp_path)
    assert EngineConfig().trust_remote_code is False
    server = VLLMServer.from_config(EngineConfig(model=str(folder), trust_remote_code=True))
    assert "--trust-remote-code" in server.command()
    with pytest.raises(ConfigError, match="own code"):
        VLLMServer.from_config(EngineConfig(model=str(folder)))
    _code, text = invoke(
        "solve", "--question", "2+2?", "--model", str(folder), "-s", "single", "--trust-remote-code"
    )
    assert "an engine was about to start" in text  # past the check: the engine is next
    _code, text = invoke("proxy", "--model", str(folder), "--port", "0", "--trust-remote-code")
    assert "an engine was about to start" in text


def test_a_model_folder_with_a_broken_config_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_bytes(b"{\x00 not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        resolve_model(str(folder))
