"""Backends: the scripted fake (always available) and real engines (imported lazily)."""

from reasoning.backends.scripted import ScriptedBackend

__all__ = ["ScriptedBackend"]
