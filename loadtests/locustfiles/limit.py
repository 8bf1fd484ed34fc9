"""Limit: many users on ``/sleep?ms=50`` against a server started with a low
``--limit-concurrency``, so that most requests are turned away with 503.

A 503 is marked as a failure with :data:`~loadtests.contract.REJECTED_BY_DESIGN`, so it shows in
Locust's failure table as what it is; the runner counts those failures exactly and compares
them with ``shardcorn_concurrency_rejected_total``. Any other failure is a real one.
"""

from __future__ import annotations

from locust import FastHttpUser, constant, task

from loadtests.contract import REJECTED_BY_DESIGN


class LimitUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def sleep(self) -> None:
        with self.client.get("/sleep?ms=50", catch_response=True) as response:
            if response.status_code == 503:
                response.failure(REJECTED_BY_DESIGN)
