"""Benchmarks of brokeragents against the raw-Redis and MiniAgents baselines (see README.md)."""
