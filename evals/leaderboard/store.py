"""The leaderboard's store: one SQLite file, one row per problem x cell x seed with the full record.

Every row is committed the moment its problem is graded, in its own transaction, so a run killed
at any instant (SIGKILL included) leaves every finished problem on disk and none half-written;
the next run skips them (`Store.done`) and retries error rows. Cells are keyed by the hash of
what decides their results (`Cell.key`), so a changed entry writes new rows and never mixes with
the old ones.

A file that is not SQLite, a SQLite file of something else, or a store that fails SQLite's own
check is reported with what to do, and never written: the store opens it read-only first.

Tables: ``meta`` (schema version), ``cells`` (what each key is), ``results`` (the rows: the
columns statistics need, the whole `Run` as JSON in ``record``), ``sessions`` (each engine's
working time and throughput, for the device-time price, and the machine it ran on).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reasoning import Run
from reasoning.errors import StoreError

__all__ = ["SCHEMA_VERSION", "CellRow", "ResultRow", "SessionRow", "Store"]

SCHEMA_VERSION = 1
APPLICATION_ID = 0x52534E47  # "RSNG": marks a SQLite file as a reasoning leaderboard store
_HEADER = b"SQLite format 3\x00"
_RESULT_COLUMNS = (
    "cell, problem_id, seed, position, correct, oracle_correct, answer, output_tokens, prompt_tokens, "
    "cached_tokens, calls, sequential_tokens, seconds, stop_reason, error, samples, session"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY, leaderboard TEXT NOT NULL, entry TEXT NOT NULL, label TEXT NOT NULL,
    model TEXT NOT NULL, dataset TEXT NOT NULL, strategy TEXT NOT NULL, swept TEXT NOT NULL,
    identity TEXT NOT NULL, iid_samples INTEGER NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    cell TEXT NOT NULL REFERENCES cells(key), problem_id TEXT NOT NULL, seed INTEGER NOT NULL,
    position INTEGER NOT NULL, correct INTEGER, oracle_correct INTEGER, answer TEXT,
    output_tokens INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
    calls INTEGER NOT NULL, sequential_tokens INTEGER, seconds REAL NOT NULL,
    stop_reason TEXT NOT NULL, error TEXT, samples TEXT NOT NULL, record TEXT NOT NULL,
    session INTEGER, finished_at TEXT NOT NULL,
    PRIMARY KEY (cell, problem_id, seed)
);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, started_at TEXT NOT NULL,
    seconds REAL NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, engine TEXT NOT NULL, machine TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class CellRow:
    """A cell as stored."""

    key: str
    leaderboard: str
    entry: str
    label: str
    model: str
    dataset: str
    strategy: str
    swept: dict[str, Any]
    identity: dict[str, Any]
    iid_samples: bool
    """Its candidates are independent samples of one prompt (pass@k and maj@k are defined)."""


@dataclass(frozen=True)
class ResultRow:
    """One problem solved by one cell under one seed (the record itself is read on demand)."""

    cell: str
    problem_id: str
    seed: int
    position: int
    """The problem's index in its dataset."""
    correct: bool | None
    oracle_correct: bool | None
    answer: str | None
    output_tokens: int
    prompt_tokens: int
    cached_tokens: int
    calls: int
    sequential_tokens: int | None
    seconds: float
    stop_reason: str
    error: str | None
    samples: list[tuple[str | None, bool | None, int]] = field(default_factory=list)
    """Each candidate's answer, whether it is right, and its output tokens."""
    session: int | None = None


@dataclass(frozen=True)
class SessionRow:
    """One engine's working session: how long it ran, what it decoded, where."""

    id: int
    model: str
    started_at: str
    seconds: float
    output_tokens: int
    prompt_tokens: int
    engine: dict[str, Any]
    machine: dict[str, Any]


class Store:
    """A leaderboard store (see the module docstring). Use `Store.open`; close it, or use ``with``."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = path
        self._db = connection

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> Store:
        """Open the store at `path` (created when missing and `create`), after checking it.

        Raises:
            StoreError: The file is not SQLite, not a leaderboard store, of a newer schema, or
                corrupted (it is left as it is), or it is missing and not to be created.
        """
        path = Path(path)
        if path.exists():
            _check(path)
        elif not create:
            raise StoreError(f"no leaderboard store at {path} (run `reasoning leaderboard run` first)")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            if not create:  # reading: nothing to set up, nothing written
                return cls(path, db)
            db.executescript(_SCHEMA)  # idempotent
            with _transaction(db):
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?), ('created_at', ?)",
                    (str(SCHEMA_VERSION), _now()),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the store ({exc})") from None
        return cls(path, db)

    def close(self) -> None:
        """Close the connection (everything is already committed)."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # writing

    def add_cell(self, row: CellRow) -> None:
        """Record what a cell key is (once; a cell's key fixes its identity)."""
        with self._write():
            self._db.execute(
                "INSERT OR IGNORE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.key, row.leaderboard, row.entry, row.label, row.model, row.dataset, row.strategy,
                    json.dumps(row.swept), json.dumps(row.identity, default=str), int(row.iid_samples),
                    _now(),
                ),
            )  # fmt: skip

    def put(
        self,
        cell: str,
        seed: int,
        position: int,
        run: Run,
        samples: Sequence[tuple[str | None, bool | None, int]],
        session: int | None = None,
    ) -> None:
        """Store one graded run (replacing an error row of the same problem), committed at once."""
        usage = run.usage
        sequential = usage.get("sequential_tokens")
        with self._write():
            self._db.execute(
                f"INSERT OR REPLACE INTO results VALUES ({', '.join('?' * 19)})",
                (
                    cell, run.problem_id, seed, position, _bool(run.correct), _bool(run.oracle_correct),
                    run.answer, int(usage.get("output_tokens", 0)), int(usage.get("prompt_tokens", 0)),
                    int(usage.get("cached_tokens", 0)), int(usage.get("calls", 0)),
                    None if sequential is None else int(sequential), float(usage.get("seconds", 0.0)),
                    run.stop_reason, run.error, json.dumps([list(s) for s in samples]),
                    run.model_dump_json(), session, _now(),
                ),
            )  # fmt: skip

    def start_session(self, model: str, engine: dict[str, Any], machine: dict[str, Any]) -> int:
        """Open a working session of `model`'s engine; returns its id."""
        with self._write():
            cursor = self._db.execute(
                "INSERT INTO sessions (model, started_at, engine, machine) VALUES (?, ?, ?, ?)",
                (model, _now(), json.dumps(engine, default=str), json.dumps(machine, default=str)),
            )
        return int(cursor.lastrowid or 0)

    def update_session(self, session: int, seconds: float, output_tokens: int, prompt_tokens: int) -> None:
        """Record a session's working time and tokens so far (called as problems finish)."""
        with self._write():
            self._db.execute(
                "UPDATE sessions SET seconds=?, output_tokens=?, prompt_tokens=? WHERE id=?",
                (seconds, output_tokens, prompt_tokens, session),
            )

    # reading

    def done(self, cell: str, seed: int) -> set[str]:
        """Problems of `cell` finished under `seed` without an error."""
        rows = self._read(
            "SELECT problem_id FROM results WHERE cell=? AND seed=? AND error IS NULL", (cell, seed)
        )
        return {str(r[0]) for r in rows}

    def cells(self, keys: Sequence[str] | None = None) -> list[CellRow]:
        """The cells stored (those of `keys`, in that order, when given)."""
        rows = [_cell(r) for r in self._read("SELECT * FROM cells ORDER BY rowid", ())]
        if keys is None:
            return rows
        by_key = {r.key: r for r in rows}
        return [by_key[k] for k in keys if k in by_key]

    def results(self, cell: str) -> list[ResultRow]:
        """The rows of `cell`, in dataset order, then by seed."""
        query = f"SELECT {_RESULT_COLUMNS} FROM results WHERE cell=? ORDER BY position, seed"
        return [_result(r) for r in self._read(query, (cell,))]

    def record(self, cell: str, problem_id: str, seed: int) -> Run:
        """The full record of one row.

        Raises:
            StoreError: There is no such row.
        """
        rows = self._read(
            "SELECT record FROM results WHERE cell=? AND problem_id=? AND seed=?", (cell, problem_id, seed)
        )
        if not rows:
            raise StoreError(f"{self.path}: no row of cell {cell} problem {problem_id} seed {seed}")
        return Run.model_validate_json(rows[0][0])

    def newest(self, cells: Sequence[str]) -> tuple[str, str, int, str] | None:
        """The most recently finished row of `cells`: its cell, problem, seed and finish time."""
        if not cells:
            return None
        query = (
            "SELECT cell, problem_id, seed, finished_at FROM results "
            f"WHERE cell IN ({', '.join('?' * len(cells))}) "
            "ORDER BY finished_at DESC, cell, problem_id, seed LIMIT 1"
        )
        rows = self._read(query, tuple(cells))
        return (str(rows[0][0]), str(rows[0][1]), int(rows[0][2]), str(rows[0][3])) if rows else None

    def sessions(self) -> list[SessionRow]:
        """Every engine session, oldest first."""
        return [
            SessionRow(
                int(r[0]), str(r[1]), str(r[2]), float(r[3]), int(r[4]), int(r[5]), json.loads(r[6]),
                json.loads(r[7]),
            )
            for r in self._read("SELECT * FROM sessions ORDER BY id", ())
        ]  # fmt: skip

    # plumbing

    @contextmanager
    def _write(self) -> Iterator[None]:
        try:
            with _transaction(self._db):
                yield
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: writing the store failed ({exc}); it is left as it was") from None

    def _read(self, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return list(self._db.execute(query, args).fetchall())
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: reading the store failed ({exc})") from None


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _check(path: Path) -> None:
    """Refuse a file that is not a sound leaderboard store, touching nothing."""
    try:
        with path.open("rb") as f:
            header = f.read(len(_HEADER))
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the store ({exc})") from None
    if header != _HEADER:
        raise StoreError(
            f"{path} is not a SQLite leaderboard store (it holds something else); it is left untouched: "
            "move it away or pass another store"
        )
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            application = db.execute("PRAGMA application_id").fetchone()[0]
            verdict = [str(r[0]) for r in db.execute("PRAGMA quick_check").fetchall()]
            tables = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = None
            if "meta" in tables:
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = int(row[0]) if row else None
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"{path} is corrupted ({exc}); it is left untouched: restore a copy or move it away"
        ) from None
    if verdict != ["ok"]:
        raise StoreError(
            f"{path} is corrupted (SQLite's check: {'; '.join(verdict[:3])}); it is left untouched: "
            "restore a copy or move it away"
        )
    if application not in (0, APPLICATION_ID) or (application == 0 and tables - {"sqlite_sequence"}):
        raise StoreError(
            f"{path} is a SQLite database of something else, not a leaderboard store; left untouched"
        )
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has store schema {version}; this reasoning reads up to {SCHEMA_VERSION}: upgrade"
        )


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _bool(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _cell(r: tuple[Any, ...]) -> CellRow:
    return CellRow(
        key=r[0], leaderboard=r[1], entry=r[2], label=r[3], model=r[4], dataset=r[5], strategy=r[6],
        swept=json.loads(r[7]), identity=json.loads(r[8]), iid_samples=bool(r[9]),
    )  # fmt: skip


def _result(r: tuple[Any, ...]) -> ResultRow:
    return ResultRow(
        cell=r[0], problem_id=r[1], seed=int(r[2]), position=int(r[3]), correct=_opt_bool(r[4]),
        oracle_correct=_opt_bool(r[5]), answer=r[6], output_tokens=int(r[7]), prompt_tokens=int(r[8]),
        cached_tokens=int(r[9]), calls=int(r[10]), sequential_tokens=None if r[11] is None else int(r[11]),
        seconds=float(r[12]), stop_reason=r[13], error=r[14],
        samples=[(s[0], _opt_bool(s[1]), int(s[2])) for s in json.loads(r[15])], session=r[16],
    )  # fmt: skip
