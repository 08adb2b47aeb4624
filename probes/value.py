"""A hidden-state value probe as a process scorer, where a step search would use a PRM.

Our construction (no paper prescribes it): the exit probe of LYNX ("LYNX: Learning Dynamic Exits
for Confidence-Controlled Reasoning", Akgül et al., arXiv 2512.05325) read as a value function.

An exit probe (`reasoning probe train`, kind ``exit``) predicts, from the hidden states at a
decision point, the probability that the answer forced at that point is right: the value of the
partial solution. Step searches cut steps at the probe's own default decision points (blank
lines), so the same probe scores a partial path at the end of its newest step: the hidden states
of the last token of ``prompt + steps + delimiter`` (the delimiter's token, as at a step-boundary
decision point). One engine read per path, all paths concurrently; no token is decoded; each read
is metered as one call. Calibration is not needed (only the probability is used).

It satisfies the `ProcessScorer` protocol of `reasoning.verifiers.process` structurally (probes
and verifiers sit side by side in the layering).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reasoning import Context
from reasoning.probes.probe import Probe, load_probe, model_of

__all__ = ["ValueProbeScorer"]


@dataclass(frozen=True)
class ValueProbeScorer:
    """Process scores from a trained exit probe on the policy's hidden states."""

    probe: str
    """Path of the probe artefact (``NAME.json``; made by `reasoning probe train`)."""
    delimiter: str = "\n\n"
    """Follows every step in the prefix read (the step search's delimiter)."""
    backend: str | None = None
    """Named backend whose hidden states are read (None: the run's default, the policy)."""

    def load(self, ctx: Context) -> Probe:
        """The probe, refused when made for another model than the backend's."""
        return load_probe(self.probe, model_of(ctx, self.backend), "exit", calibrated=False)

    async def score(self, ctx: Context, paths: Sequence[Sequence[str]]) -> list[float]:
        """P(right) of each partial path, read at its last step boundary."""
        probe = self.load(ctx)
        layers = probe.card.layers
        prefixes = ["".join(step + self.delimiter for step in path) for path in paths]
        states = await ctx.run_all(*(ctx.hidden_states(layers, p, backend=self.backend) for p in prefixes))
        if not states:
            return []
        rows = [s.reshape(-1) for s in states]
        return [float(v) for v in probe.predict(np.stack(rows))]
