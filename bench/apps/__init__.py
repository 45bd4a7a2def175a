"""Agent modules served by worker processes during the benchmarks."""
