"""Decision-point datasets: features at decision points with forced-exit labels, on disk.

Layout (never pickle): ``NAME.safetensors`` holds the arrays, ``NAME.json`` the description.

* ``features`` float16 ``[events, len(layers) * hidden]``: hidden states of the chosen layers at
  each decision point, concatenated layer after layer;
* ``labels`` int8 ``[events]``: 1 when forcing the final answer there gave the right answer;
* ``trace`` int32 ``[events]``: index of the trace (one per problem) the event belongs to;
* ``position`` int32 ``[events]``: 1-based index of the event's token among the generated ones;
* ``prompt_features`` float16 ``[traces, ...]`` and ``trace_correct`` int8 ``[traces]``: the
  prompt's last-token hidden states and whether the full trace was right (difficulty probes);
* ``advantage`` float32 ``[events]``, optional: the real-valued target behind a binary label
  (advantage-router data: the target's step score minus the draft's), for rank correlations;
* ``final_features`` float16 ``[traces, ...]``, optional: the hidden states at each trace's last
  token (value models score whole candidates there).

The JSON side records the model fingerprint, layers, cue set, exit phrase, dataset and one
entry per trace (problem id, tokens, answer, correctness), plus the sha256 of the arrays file,
which probe artefacts quote as their training-data hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reasoning.errors import ConfigError, DatasetError

__all__ = ["DecisionPoints", "file_sha256", "what_artefact"]

_ARRAYS = ("features", "labels", "trace", "position", "prompt_features", "trace_correct")


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _a(word: str) -> str:
    """`word` with its indefinite article: ``an exit``, ``a difficulty``."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def what_artefact(document: object) -> str | None:
    """What a JSON file of this package is, in words (None: not one it recognises).

    For messages about a file given in the wrong place: a probe given training data, a
    calibration given a probe.

    Example:
        >>> what_artefact({"arrays_sha256": "...", "events": 10, "traces": []})
        'decision-point training data (made by `reasoning probe collect`)'
    """
    if not isinstance(document, dict):
        return None
    if str(document.get("format", "")).startswith("reasoning.atts-calibration") or {
        "draft",
        "target",
        "scores",
    } <= set(document):
        return "an ATTS calibration (made by `reasoning probe atts-calibrate`)"
    if {"kind", "layers", "hidden_size"} <= set(document):
        return f"a probe artefact ({_a(str(document['kind']))} probe, made by `reasoning probe train`)"
    if "arrays_sha256" in document and ({"events", "traces"} & set(document)):
        return "decision-point training data (made by `reasoning probe collect`)"
    return None


def _paths(path: str | Path) -> tuple[Path, Path]:
    base = Path(path)
    if base.suffix in (".json", ".safetensors"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


@dataclass
class DecisionPoints:
    """Labelled decision points of a set of traces, with their features."""

    features: np.ndarray
    labels: np.ndarray
    trace: np.ndarray
    position: np.ndarray
    prompt_features: np.ndarray
    trace_correct: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    """model {name, sha256}, layers, cues, exit_phrase, dataset, traces [...], ..."""
    advantage: np.ndarray | None = None
    """Optional real value behind each label (advantage-router data: Delta = s_target - s_draft)."""
    final_features: np.ndarray | None = None
    """Optional hidden states at each trace's last token (value models read whole candidates)."""

    def __post_init__(self) -> None:
        n = len(self.labels)
        if not (len(self.features) == len(self.trace) == len(self.position) == n):
            raise ConfigError("decision points: features, labels, trace and position differ in length")
        if self.advantage is not None and len(self.advantage) != n:
            raise ConfigError("decision points: advantage and labels differ in length")
        if len(self.prompt_features) != len(self.trace_correct):
            raise ConfigError("decision points: prompt_features and trace_correct differ in length")
        if self.final_features is not None and len(self.final_features) != len(self.trace_correct):
            raise ConfigError("decision points: final_features and trace_correct differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def traces(self) -> int:
        """Number of traces."""
        return len(self.trace_correct)

    def subset(self, traces: np.ndarray) -> DecisionPoints:
        """The events of the given trace indices (renumbered 0..len-1), for group splits."""
        traces = np.asarray(traces, dtype=np.int64)
        keep = np.isin(self.trace, traces)
        renumber = {int(t): i for i, t in enumerate(traces)}
        meta = dict(self.meta)
        if "traces" in meta:
            meta["traces"] = [meta["traces"][int(t)] for t in traces]
        if meta.get("arrays_sha256"):  # a part is not the whole: its own identity, derived
            kept = ",".join(str(int(t)) for t in traces)
            meta["arrays_sha256"] = hashlib.sha256(f"{meta['arrays_sha256']}[{kept}]".encode()).hexdigest()
        return DecisionPoints(
            features=self.features[keep],
            labels=self.labels[keep],
            trace=np.array([renumber[int(t)] for t in self.trace[keep]], dtype=np.int32),
            position=self.position[keep],
            prompt_features=self.prompt_features[traces],
            trace_correct=self.trace_correct[traces],
            meta=meta,
            advantage=None if self.advantage is None else self.advantage[keep],
            final_features=None if self.final_features is None else self.final_features[traces],
        )

    def save(self, path: str | Path) -> Path:
        """Write ``path.safetensors`` and ``path.json``; return the JSON path."""
        from safetensors.numpy import save_file

        arrays, described = _paths(path)
        arrays.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, np.ndarray] = {
            "features": np.ascontiguousarray(self.features, dtype=np.float16),
            "labels": np.ascontiguousarray(self.labels, dtype=np.int8),
            "trace": np.ascontiguousarray(self.trace, dtype=np.int32),
            "position": np.ascontiguousarray(self.position, dtype=np.int32),
            "prompt_features": np.ascontiguousarray(self.prompt_features, dtype=np.float16),
            "trace_correct": np.ascontiguousarray(self.trace_correct, dtype=np.int8),
        }
        if self.advantage is not None:
            tensors["advantage"] = np.ascontiguousarray(self.advantage, dtype=np.float32)
        if self.final_features is not None:
            tensors["final_features"] = np.ascontiguousarray(self.final_features, dtype=np.float16)
        save_file(tensors, str(arrays))
        meta = {**self.meta, "events": len(self), "positives": int(self.labels.sum())}
        meta["arrays_sha256"] = file_sha256(arrays)
        described.write_text(json.dumps(meta, indent=1))
        self.meta = meta
        return described

    @classmethod
    def load(cls, path: str | Path) -> DecisionPoints:
        """Read a dataset written by `save` (either file's path, or the common stem).

        Raises:
            DatasetError: A file is missing, is not decision-point data (another artefact: the
                message says which), or the arrays do not match their recorded hash.
        """
        from safetensors.numpy import load_file

        arrays, described = _paths(path)
        for each in (arrays, described):
            if not each.is_file():
                raise DatasetError(f"decision-point data: {each} does not exist")
        try:
            meta = json.loads(described.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DatasetError(f"{described}: not decision-point data (not valid JSON: {exc})") from None
        what = what_artefact(meta)
        if not isinstance(meta, dict) or (what is not None and not what.startswith("decision-point")):
            raise DatasetError(f"{described} is {what or 'not a JSON object'}, not decision-point data")
        if meta.get("arrays_sha256") not in (None, file_sha256(arrays)):
            raise DatasetError(f"{arrays} does not match the sha256 recorded in {described}")
        loaded = load_file(str(arrays))
        missing = [name for name in _ARRAYS if name not in loaded]
        if missing:
            raise DatasetError(f"{arrays} lacks arrays {missing}")
        return cls(
            **{name: loaded[name] for name in _ARRAYS},
            meta=meta,
            advantage=loaded.get("advantage"),
            final_features=loaded.get("final_features"),
        )
