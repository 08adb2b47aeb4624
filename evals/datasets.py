"""Datasets by name: the shipped benchmarks, JSONL files, reasoning-gym tasks, Hugging Face ids.

* ``gsm8k`` (the 1,319 test problems), ``gsm8k-train`` (the 7,473 train problems: fit probes,
  calibrations and value models on these), ``math500``, ``aime24``: shipped with the package
  (MIT; licences beside them). Problem ids are ``gsm8k-<index>`` and ``gsm8k-train-<index>``.
* a path to a ``.jsonl`` file, with a field mapping (``question=problem,answer=solution``); a
  row's own ``id`` field names its problem when it has one.
* ``gym:<task>`` (e.g. ``gym:basic_arithmetic``): reasoning-gym's seeded generator; scored by
  the task's own scorer.
* ``hf:<id>`` (e.g. ``hf:openai/gsm8k``): a Hugging Face dataset, when the machine is online.

Every problem has a gold answer, so a run's accuracy is over all of them: a row without one is
refused, naming it, unless the dataset is loaded ungraded (``graded=False``, ``solve
--no-grade``: no problem then carries an answer). Problem ids are unique: a repeated id is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from reasoning import Problem
from reasoning.errors import ConfigError, DatasetError
from reasoning.problem import AnswerKind

__all__ = ["BUILTIN", "load_dataset"]

BUILTIN: dict[str, tuple[str, dict[str, str], AnswerKind]] = {
    "gsm8k": ("gsm8k_test.jsonl", {"question": "question", "answer": "answer"}, "number"),
    "gsm8k-train": ("gsm8k_train.jsonl", {"question": "question", "answer": "answer"}, "number"),
    "math500": (
        "math500_test.jsonl",
        {"question": "problem", "answer": "answer", "id": "unique_id"},
        "math",
    ),
    "aime24": (
        "aime24_test.jsonl",
        {"question": "problem", "answer": "answer", "id": "id"},
        "math",
    ),
}
"""name -> (file, field mapping, answer kind)."""


def load_dataset(
    name: str,
    *,
    limit: int | None = None,
    offset: int = 0,
    fields: Mapping[str, str] | None = None,
    kind: AnswerKind | None = None,
    seed: int = 0,
    graded: bool = True,
) -> list[Problem]:
    """Load problems.

    Args:
        name: A built-in name, a JSONL path, ``gym:<task>`` or ``hf:<id>``.
        limit: Keep at most this many problems (after `offset`).
        offset: Skip this many problems first.
        fields: For JSONL/HF: which record fields hold ``question``, ``answer`` and ``id``.
        kind: How to grade (default: the built-in's kind, else ``math``).
        seed: Seed of reasoning-gym generators.
        graded: Every problem must have a gold answer (False: none carries one, nothing is
            graded).

    Raises:
        ConfigError: Unknown dataset name (the message lists the valid ones).
        DatasetError: A file is missing or is a directory, a row is malformed or (when
            `graded`) has no answer, or an id repeats (names file and line).
    """
    if limit is not None and limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {limit}")
    if name.startswith("gym:"):
        return _ungraded(_gym(name[4:], limit or 50, offset, seed), graded)
    if name.startswith("hf:"):
        return _huggingface(name[3:], fields or {}, kind or "math", limit, offset, graded)
    if name in BUILTIN:
        file, mapping, builtin_kind = BUILTIN[name]
        path = Path(str(resources.files("reasoning.evals") / "data" / file))
        return _jsonl(path, mapping, kind or builtin_kind, name, limit, offset, graded)
    path = Path(name).expanduser()
    if path.suffix == ".jsonl" or path.exists():
        if path.is_dir():
            raise DatasetError(f"dataset {path} is a directory; give a .jsonl file (one problem per line)")
        if not path.is_file():
            raise DatasetError(f"dataset file {path} does not exist")
        mapping = {"question": "question", "answer": "answer", "id": "id", **(fields or {})}
        return _jsonl(path, mapping, kind or "math", path.stem, limit, offset, graded)
    raise ConfigError(
        f"unknown dataset {name!r}; choose one of: {', '.join(BUILTIN)}, a .jsonl file, "
        "gym:<task> (reasoning-gym), or hf:<id> (Hugging Face, online only)"
    )


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    seen = False
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(
                    f"{path}:{number}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            seen = True
            yield number, row
    if not seen:
        raise DatasetError(f"{path}: holds no problems (an empty JSONL file)")


def _problem(
    row: Mapping[str, Any],
    mapping: Mapping[str, str],
    kind: AnswerKind,
    default_id: str,
    where: str,
    graded: bool,
) -> Problem:
    qfield, afield = mapping.get("question", "question"), mapping.get("answer", "answer")
    if qfield not in row:
        raise DatasetError(
            f"{where}: no field {qfield!r} (fields: {', '.join(row)}); map it with --field question=NAME"
        )
    answer = row.get(afield) if graded else None
    if answer is not None:
        answer = str(answer)
        if "####" in answer:
            answer = answer.rsplit("####", 1)[1].strip()
        answer = answer if answer.strip() else None  # an empty answer is no answer
    if answer is None and graded:
        raise DatasetError(
            f"{where}: no answer (field {afield!r} missing or empty; fields: {', '.join(row)}), so it "
            "could not be graded: map the answer with --field answer=NAME, or pass --no-grade to solve "
            "without grading any problem"
        )
    ident = default_id
    if "id" in mapping and row.get(mapping["id"]) is not None:
        ident = str(row[mapping["id"]])
    return Problem(id=ident, question=str(row[qfield]), answer=answer, kind=kind)


def _unique(problems: list[Problem], where: list[str]) -> list[Problem]:
    """`problems`, refused when an id repeats (`where`: each problem's place, for the message)."""
    first: dict[str, str] = {}
    for problem, place in zip(problems, where, strict=True):
        if problem.id in first:
            raise DatasetError(
                f"{place}: problem id {problem.id!r} is also the id of {first[problem.id]}; ids must be "
                "unique (results are resumed by id)"
            )
        first[problem.id] = place
    return problems


def _ungraded(problems: list[Problem], graded: bool) -> list[Problem]:
    """`problems`, or (not `graded`) without their gold: nothing to grade them with."""
    if graded:
        return problems
    return [replace(p.without_gold(), kind="math" if p.kind == "reasoning_gym" else p.kind) for p in problems]


def _jsonl(
    path: Path,
    mapping: Mapping[str, str],
    kind: AnswerKind,
    prefix: str,
    limit: int | None,
    offset: int,
    graded: bool,
) -> list[Problem]:
    problems: list[Problem] = []
    where: list[str] = []
    for index, (number, row) in enumerate(_rows(path)):
        if index < offset:
            continue
        if limit is not None and len(problems) >= limit:
            break
        where.append(f"{path}:{number}")
        problems.append(_problem(row, mapping, kind, f"{prefix}-{index}", where[-1], graded))
    return _unique(problems, where)


def _gym(task: str, limit: int, offset: int, seed: int) -> list[Problem]:
    try:
        import reasoning_gym
    except ImportError as exc:
        raise ConfigError("gym:<task> needs reasoning-gym: pip install 'reasoning[gym]'") from exc
    try:
        data = reasoning_gym.create_dataset(task, size=offset + limit, seed=seed)
    except Exception as exc:  # reasoning-gym raises ValueError/KeyError for unknown tasks
        raise ConfigError(f"unknown reasoning-gym task {task!r}: {exc}") from None
    problems: list[Problem] = []
    for index in range(offset, offset + limit):
        entry = data[index]
        problems.append(
            Problem(
                id=f"gym-{task}-{seed}-{index}",
                question=entry["question"],
                answer=str(entry["answer"]) if entry.get("answer") is not None else None,
                kind="reasoning_gym",
                metadata={"entry": json.loads(json.dumps(entry, default=str))},
            )
        )
    return problems


def _huggingface(
    dataset_id: str,
    mapping: Mapping[str, str],
    kind: AnswerKind,
    limit: int | None,
    offset: int,
    graded: bool,
) -> list[Problem]:
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError("hf:<id> needs the datasets package: pip install 'reasoning[hf]'") from exc
    config, _, split = dataset_id.partition("@")
    repo, _, subset = config.partition(":")
    try:
        data = datasets.load_dataset(repo, subset or None, split=split or "test")
    except Exception as exc:  # offline machines fail with assorted connection errors
        raise DatasetError(f"could not load Hugging Face dataset {repo!r} (offline?): {exc}") from None
    mapping = {"question": "question", "answer": "answer", **mapping}
    end = len(data) if limit is None else min(len(data), offset + limit)
    where = [f"hf:{repo} row {i}" for i in range(offset, end)]
    problems = [
        _problem(dict(data[i]), mapping, kind, f"{repo}-{i}", place, graded)
        for i, place in zip(range(offset, end), where, strict=True)
    ]
    return _unique(problems, where)
