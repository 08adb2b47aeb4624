"""Hidden-state probes and conformal stopping rules.

So far: `reasoning.probes.conformal` (split conformal quantiles, p-values and LYNX's
class-conditional exit rule, with their guarantee stated). Probe training, cue detection and
the early-exit strategies come with the probes issue.
"""
