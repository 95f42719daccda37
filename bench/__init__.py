"""Benchmarks for GrantGate: `python -m bench.stream` measures large-object streaming through the gateway."""
