"""Streaming downloads: ``GET /stream``, a chunked response read to its last byte."""

from __future__ import annotations

from locust import FastHttpUser, constant, task


class StreamUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def download(self) -> None:
        with self.client.get("/stream", catch_response=True) as response:
            if response.status_code != 200:
                return
            headers = response.headers or {}
            if headers.get("transfer-encoding", "").lower() != "chunked":
                response.failure("/stream was not sent with Transfer-Encoding: chunked")
            elif not response.content:
                response.failure("/stream answered an empty body")
