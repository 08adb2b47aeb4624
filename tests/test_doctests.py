"""The examples in docstrings run and hold (the package-dir layout keeps pytest's own doctest
collection from importing these modules under their installed names)."""

import doctest
import importlib

import pytest

MODULES = [
    "reasoning.backend",
    "reasoning.budget",
    "reasoning.selection",
    "reasoning.controller",
    "reasoning.strategies",
    "reasoning.probes.conformal",
    "reasoning.probes.cues",
    "reasoning.probes.trajectory",
    "reasoning.probes.exit",
    "reasoning.probes.probe",
    "reasoning.strategies.difficulty",
    "reasoning.models",
    "reasoning.verifiers.process",
    "reasoning.strategies.particle_filtering",
    "reasoning.hardware",
    "reasoning.evals.cli",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
