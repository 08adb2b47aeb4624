"""Evaluation: datasets, the resumable dataset runner and the command line."""

if __name__ != "reasoning.evals":  # this folder, on sys.path in a checkout's root: no shadowing
    raise ImportError(f"import reasoning.evals, not {__name__} (a folder of the reasoning checkout)")
