"""JSON API: ``GET /json``, checking the answer is a JSON document with a JSON content type."""

from __future__ import annotations

import json

from locust import FastHttpUser, constant, task


class JsonUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def get_json(self) -> None:
        headers = {"Accept": "application/json"}
        with self.client.get("/json", headers=headers, catch_response=True) as response:
            if response.status_code != 200:
                return  # Locust fails a 4xx/5xx on its own, with the status in the message
            content_type = (response.headers or {}).get("content-type", "")
            if not content_type.startswith("application/json"):
                response.failure(f"/json answered content-type {content_type!r}")
                return
            try:
                json.loads(response.content or b"")
            except ValueError as exc:
                response.failure(f"/json answered a body that is not JSON: {exc}")
