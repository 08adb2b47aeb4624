"""CPU speed-ups for the engines this package starts, installed as a vLLM plugin.

vLLM loads the ``vllm.general_plugins`` entry points in every process it starts (the engine
core and its workers included), which is the only place code can reach the worker that
samples tokens. The plugin does nothing unless ``REASONING_VLLM_PATCHES=1`` is set, which
`reasoning.backends.vllm_local` does for the engines and servers it starts: installing this
package never changes how anyone else's vLLM behaves.

What it changes, on CPU only, each measured (`benchmarks/engine.py`) and checked by tests:

* **Nucleus (top-p) filtering without sorting the vocabulary.** vLLM's CPU sampler applies
  top-p by sorting all 151,936 logits of every row at every step; with ``top_p=0.95`` (the
  default of most strategies here) that sort took 56% of the worker's time in a
  self-consistency run on the 0.5B. `nucleus` computes the same mask from the top 256
  candidates (one ``topk``, one ``logsumexp``) and falls back to vLLM's sort only for rows whose
  nucleus is wider than that. Kept tokens: those whose exclusive cumulative probability from the
  top is below p, which is exactly the set vLLM keeps (its ascending cumulative sum <= 1 - p
  masks the same tokens), up to float rounding at the boundary.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

__all__ = ["APPLIED", "CANDIDATES", "ENV", "nucleus", "register"]

logger = logging.getLogger(__name__)

ENV = "REASONING_VLLM_PATCHES"
"""Set to ``1`` to let the plugin act (the backends of this package set it for their engines)."""

CANDIDATES = 256
"""Top tokens the fast nucleus filter looks at before falling back to a full sort."""

APPLIED: list[str] = []
"""Names of the patches applied in this process (read by the worker extension for tests)."""


def register() -> None:
    """The ``vllm.general_plugins`` entry point: apply the CPU patches when asked to."""
    if os.environ.get(ENV) != "1" or "top-p" in APPLIED:
        return
    try:
        from vllm.platforms import current_platform
        from vllm.v1.sample.ops import topk_topp_sampler as sampler
    except ImportError:  # pragma: no cover - another vLLM layout: leave it alone
        return
    if not current_platform.is_cpu() or not hasattr(sampler, "apply_top_k_top_p_pytorch"):
        return
    original = sampler.apply_top_k_top_p_pytorch

    def apply_top_k_top_p_pytorch(logits: Any, k: Any, p: Any, allow_cpu_sync: bool = False) -> Any:
        if p is None or k is not None:
            return original(logits, k, p, allow_cpu_sync)
        return nucleus(logits, p, lambda rows, rows_p: original(rows, None, rows_p, allow_cpu_sync))

    sampler.apply_top_k_top_p_pytorch = apply_top_k_top_p_pytorch
    APPLIED.append("top-p")
    logger.info("reasoning: CPU top-p filter without a vocabulary sort is on")


def nucleus(logits: Any, p: Any, full_sort: Callable[[Any, Any], Any], candidates: int = CANDIDATES) -> Any:
    """Mask (in place) every token outside each row's top-p nucleus with -inf.

    Args:
        logits: ``[rows, vocab]`` float logits (temperature already applied).
        p: ``[rows]`` top-p per row; rows with p >= 1 are left as they are.
        full_sort: The sorting implementation, used for rows whose nucleus has more than
            `candidates` tokens (called as ``full_sort(logits[rows], p[rows])``).
        candidates: How many top tokens to look at first.

    Returns:
        `logits`, masked.
    """
    import torch

    active = p < 1.0
    if not bool(active.any()):
        return logits
    every = bool(active.all())
    rows = None if every else active.nonzero().squeeze(1)
    sub = logits if rows is None else logits[rows]
    sub_p = p if rows is None else p[rows]
    top, _ = sub.topk(min(candidates, sub.shape[1]), dim=-1)  # descending
    probs = (top - torch.logsumexp(sub, dim=-1, keepdim=True)).exp()
    cumulative = probs.cumsum(dim=-1)
    keep = (cumulative - probs) < sub_p.unsqueeze(1)  # exclusive cumulative mass below p
    keep[:, 0] = True
    covered = cumulative[:, -1] >= sub_p
    threshold = top.masked_fill(~keep, float("inf")).amin(dim=-1, keepdim=True)
    wide = None if bool(covered.all()) else (~covered).nonzero().squeeze(1)
    saved = None if wide is None else sub[wide].clone()
    sub.masked_fill_(sub < threshold, float("-inf"))
    if wide is not None and saved is not None:
        sub[wide] = full_sort(saved, sub_p[wide])
    if rows is not None:
        logits[rows] = sub
    return logits
