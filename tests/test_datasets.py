import json
from pathlib import Path

import pytest

from reasoning import ConfigError, DatasetError
from reasoning.evals.datasets import load_dataset


def test_builtin_datasets_load_with_gold_answers() -> None:
    gsm = load_dataset("gsm8k", limit=3)
    assert len(gsm) == 3 and gsm[0].answer == "18" and gsm[0].kind == "number"
    assert len(load_dataset("gsm8k")) == 1319
    math = load_dataset("math500", limit=2)
    assert math[0].kind == "math" and math[0].id.startswith("test/")
    assert len(load_dataset("aime24")) == 30
    assert load_dataset("gsm8k", limit=1, offset=1)[0].id == gsm[1].id


def test_jsonl_with_field_mapping(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps({"q": "1+1?", "a": 2, "key": "x"})
        + "\n\n"
        + json.dumps({"q": "2+2?", "a": 4, "key": "y"})
        + "\n"
    )
    problems = load_dataset(str(path), fields={"question": "q", "answer": "a", "id": "key"}, kind="number")
    assert [(p.id, p.question, p.answer) for p in problems] == [
        ("x", "1+1?", "2"),
        ("y", "2+2?", "4"),
    ]


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok", "answer": 1}\n{"question": oops}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: not valid JSON"):
        load_dataset(str(path))
    path.write_text('{"prompt": "ok"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: no field 'question'.*--field question=NAME"):
        load_dataset(str(path))


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of: gsm8k, gsm8k-train, math500, aime24"):
        load_dataset("gsm9k")


def test_reasoning_gym_tasks_are_seeded_and_gradable() -> None:
    from reasoning.verifiers import grade

    first = load_dataset("gym:basic_arithmetic", limit=3, seed=7)
    again = load_dataset("gym:basic_arithmetic", limit=3, seed=7)
    assert [p.question for p in first] == [p.question for p in again]
    assert first[0].kind == "reasoning_gym"
    assert grade(first[0], first[0].answer) is True
    assert grade(first[0], "definitely wrong") is False
    with pytest.raises(ConfigError, match="unknown reasoning-gym task"):
        load_dataset("gym:no_such_task", limit=1)


def test_answers_are_required_unless_ungraded(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "1+1?", "answer": 2}\n{"question": "2+2?", "answer": null}\n')
    with pytest.raises(DatasetError, match=r"mine.jsonl:2: no answer \(field 'answer'"):
        load_dataset(str(path))
    assert [p.answer for p in load_dataset(str(path), limit=1)] == ["2"]  # only the rows loaded count
    assert [p.answer for p in load_dataset(str(path), graded=False)] == [None, None]
    gym = load_dataset("gym:basic_arithmetic", limit=2, graded=False)
    assert [(p.answer, p.metadata, p.kind) for p in gym] == [(None, {}, "math")] * 2


def test_ids_come_from_the_rows_and_must_be_unique(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"id": 7, "question": "a", "answer": 1}\n{"question": "b", "answer": 2}\n')
    assert [p.id for p in load_dataset(str(path))] == ["7", "mine-1"]
    path.write_text('{"id": "x", "question": "a", "answer": 1}\n{"id": "x", "question": "b", "answer": 2}\n')
    with pytest.raises(DatasetError, match=r"mine.jsonl:2: problem id 'x' is also the id of .*mine.jsonl:1"):
        load_dataset(str(path))
    with pytest.raises(DatasetError, match="is a directory"):
        load_dataset(str(tmp_path))
