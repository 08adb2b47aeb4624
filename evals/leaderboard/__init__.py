"""Leaderboard runs: a strategy x budget x dataset matrix in a SQLite store, statistics, reports, advice."""
