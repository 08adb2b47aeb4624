"""Serving: the OpenAI-compatible proxy running strategies (`proxy`); vllm serve as a process (`server`)."""
