"""Locust load tests for shardcorn, and a runner that checks Locust against the exporter.

``python -m loadtests.run --scenario hello`` starts a server, drives it with Locust and prints
one report; see ``loadtests/README.md``.
"""
