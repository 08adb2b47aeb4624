"""Hidden-state value models as process scorers (step searches) and outcome scorers (best-of-n).

The value model (``kind="value"``, shipped for the embedded models): an outcome-supervised value
model (OVM: "Outcome-supervised Verifiers for Planning in Mathematical Reasoning", Yu et al.,
arXiv 2311.09724): a head on the generating model's own hidden states at step boundaries and at a
trace's last token, every such prefix of a sampled trace labelled by whether that trace's final
answer was right. No extra decoding: the labels come from the sampled traces themselves (Monte
Carlo rollouts from each prefix, as Math-Shepherd, arXiv 2312.08935, labels them, cost k
completions per prefix: about 6x the decoding on these traces, which 2 cores cannot spare).

The older construction, still accepted (``scorer="probe"``; no paper prescribes it): the exit
probe of LYNX ("LYNX: Learning Dynamic Exits for Confidence-Controlled Reasoning", Akgül et al.,
arXiv 2512.05325) read as a value function.

An exit probe (`reasoning probe train`, kind ``exit``) predicts, from the hidden states at a
decision point, the probability that the answer forced at that point is right: the value of the
partial solution. Step searches cut steps at the probe's own default decision points (blank
lines), so the same probe scores a partial path at the end of its newest step: the hidden states
of the last token of ``prompt + steps + delimiter`` (the delimiter's token, as at a step-boundary
decision point). One engine read per path, all paths concurrently; no token is decoded; each read
is metered as one call. Calibration is not needed (only the probability is used).

It satisfies the `ProcessScorer` protocol of `reasoning.verifiers.process` structurally (probes
and verifiers sit side by side in the layering). `outcome_values` scores whole candidates for
best-of-n (``score="value"``): the hidden states of the last token of prompt + candidate text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reasoning import Context
from reasoning.probes.heads import ProbeHead
from reasoning.probes.probe import Kind, Probe, load_probe, model_of

__all__ = ["ValueProbeScorer", "outcome_values"]


@dataclass(frozen=True)
class ValueProbeScorer:
    """Process scores from a trained exit probe on the policy's hidden states."""

    probe: str = ""
    """Path of the artefact (``NAME.json``; made by `reasoning probe train`); empty: the value
    model shipped for the policy."""
    delimiter: str = "\n\n"
    """Follows every step in the prefix read (the step search's delimiter)."""
    backend: str | None = None
    """Named backend whose hidden states are read (None: the run's default, the policy)."""
    kind: Kind = "value"
    """``value`` (a value model) or ``exit`` (an exit probe read as a value)."""

    def load(self, ctx: Context) -> Probe:
        """The artefact, refused when made for another model than the backend's or fitted on this problem."""
        return load_probe(
            self.probe, model_of(ctx, self.backend), self.kind, calibrated=False, problem=ctx.problem
        )

    async def score(self, ctx: Context, paths: Sequence[Sequence[str]]) -> list[float]:
        """P(right) of each partial path, read at its last step boundary."""
        probe = self.load(ctx)
        layers = probe.card.layers
        prefixes = ["".join(step + self.delimiter for step in path) for path in paths]
        head = ProbeHead(probe)  # runs where the states are read: only floats come back
        reads = (ctx.mapped_hidden_states(head, layers, p, backend=self.backend) for p in prefixes)
        return list(await ctx.run_all(*reads))


async def outcome_values(
    ctx: Context, texts: Sequence[str], probe: str = "", backend: str | None = None
) -> list[float]:
    """P(right) of each whole candidate text by the value model, read at its last token.

    All reads go out together; no token is decoded (each read is metered as one call).
    """
    model = load_probe(probe, model_of(ctx, backend), "value", calibrated=False, problem=ctx.problem)
    head, layers = ProbeHead(model), model.card.layers
    reads = (ctx.mapped_hidden_states(head, layers, text, backend=backend) for text in texts)
    return list(await ctx.run_all(*reads))
