"""Metrics: counters bumped by shards on the hot path, and the Prometheus exporter reading them."""
