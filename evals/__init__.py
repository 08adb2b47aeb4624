"""Evaluation: datasets, the resumable dataset runner and the command line."""
