"""Heads: what turns hidden states into a probe's scores, run where the states are read.

`reasoning.strategy.Context.mapped_hidden_states` applies a head to the hidden states of one
read. On one engine the head runs in this process; on a pool of engine replicas (``--ray``) it
is shipped once to each replica and runs beside the engine, so only its output (a float, a few
trajectory signals) crosses the network, not ``[positions, layers, hidden]`` floats. A head
must pickle: these are plain objects of importable classes.

Example:
    >>> import numpy as np
    >>> from functools import partial
    >>> from reasoning.probes.trajectory import lt_signals
    >>> states = np.array([[[0.0, 0.0]], [[1.0, 0.0]], [[2.0, 0.0]]], dtype=np.float32)
    >>> partial(lt_signals, k=1)(states).segments   # a trajectory head: a few floats back
    3
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reasoning.probes.probe import Probe

__all__ = ["ProbeHead"]


@dataclass(frozen=True)
class ProbeHead:
    """A probe's probability for the states read at one position (``[1, layers, hidden]``).

    Equal heads (the same loaded probe: `reasoning.probes.probe.load_probe` caches it) are one
    head to a replica pool, installed on each replica once.
    """

    probe: Probe
    """The probe whose `Probe.predict` scores the states."""

    def __call__(self, states: np.ndarray) -> float:
        """P of the one row the states make (layers side by side, as the probe was trained)."""
        return float(self.probe.predict(np.asarray(states).reshape(1, -1))[0])
