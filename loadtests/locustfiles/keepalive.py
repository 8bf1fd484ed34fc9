"""Keep-alive versus ``Connection: close`` churn, side by side in one run.

Both users ask for ``/``; they differ only in whether the connection outlives the request,
so the two rows of the report show what a TCP handshake and an accept per request cost.
``loadtests.scenarios`` runs both (``keepalive``) or the churn user alone (``churn``).
"""

from __future__ import annotations

from locust import FastHttpUser, constant, task


class KeepAliveUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def hello(self) -> None:
        self.client.get("/", name="/ keep-alive")


class ConnectionCloseUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def hello(self) -> None:
        # The client drops its connection when the response says "Connection: close"; a server
        # that closes without saying so makes the next request fail on a dead socket, which is
        # the bug this user is here to show.
        with self.client.get(
            "/", name="/ Connection: close", headers={"Connection": "close"}, catch_response=True
        ) as response:
            if response.status_code != 200:
                return
            connection = (response.headers or {}).get("connection", "")
            if connection.lower() != "close":
                response.failure(f"asked for Connection: close, got Connection: {connection!r}")
