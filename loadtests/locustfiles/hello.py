"""Hello: ``GET /`` as fast as the users can go, over kept-alive connections."""

from __future__ import annotations

from locust import FastHttpUser, constant, task


class HelloUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def hello(self) -> None:
        with self.client.get("/", catch_response=True) as response:
            if response.status_code == 200 and not response.content:
                response.failure("hello answered 200 with an empty body")
