"""Side-by-side benchmarks of shardcorn against peer ASGI servers (see bench/README.md)."""
