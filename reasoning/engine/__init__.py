"""Engine plumbing: the embedded models (GGUF assembly and verification) and the machine (dtype choice)."""
