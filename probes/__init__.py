"""Hidden-state probes and conformal stopping rules (filled in by the probes issue)."""
