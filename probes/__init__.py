"""Hidden-state probes and conformal stopping rules.

* `reasoning.probes.cues`: decision points (cue words, blank lines, every k tokens);
* `reasoning.probes.exit`: forced exits (exit phrases, reading the answer up to its brace);
* `reasoning.probes.data`: labelled decision points with features, on disk (safetensors + JSON);
* `reasoning.probes.probe`: probe training, AUROC, calibration, self-describing artefacts;
* `reasoning.probes.conformal`: split conformal quantiles, p-values, LYNX's exit rule;
* `reasoning.probes.trajectory`: latent-trajectory signals (net, cumulative, aligned change);
* `reasoning.probes.value`: an exit probe as a process scorer for step searches (value probe);
* `reasoning.probes.advantage`: advantage routers (where they read, escalation-rate calibration).

Collecting labels needs gold answers or a judge and lives in `reasoning.evals.probing` and
`reasoning.evals.router_data`; the strategies that use probes are `early-exit`, `lt-select`,
`lt-prune`, `difficulty`, `arbitrage`, and the tree searches with ``scorer="probe"``.
"""

if __name__ != "reasoning.probes":  # this folder, on sys.path in a checkout's root: no shadowing
    raise ImportError(f"import reasoning.probes, not {__name__} (a folder of the reasoning checkout)")
