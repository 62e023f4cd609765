"""Benchmarks: a load generator that behaves like many Envoys, a mesh generator, scenarios, profiles."""
