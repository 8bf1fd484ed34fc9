"""Uploads: ``POST`` bodies of a few sizes to ``/echo`` and check every byte comes back."""

from __future__ import annotations

import itertools
import string

from locust import FastHttpUser, constant, task

from loadtests.contract import UPLOAD_SIZES


def _body(size: int) -> str:
    # ASCII text, so the body is the same bytes whatever encoding the client picks, and a
    # shifted or truncated echo is visible (a repeated single byte would hide an offset bug).
    alphabet = string.ascii_letters + string.digits
    return "".join(itertools.islice(itertools.cycle(alphabet), size))


BODIES = {size: _body(size) for size in UPLOAD_SIZES}


class UploadUser(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self._sizes = itertools.cycle(UPLOAD_SIZES)

    @task
    def upload(self) -> None:
        size = next(self._sizes)
        body = BODIES[size]
        headers = {"Content-Type": "application/octet-stream"}
        name = f"/echo {size // 1024} KiB"
        with self.client.post(
            "/echo", data=body, headers=headers, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                return
            echoed = response.content or b""
            if echoed != body.encode("ascii"):
                response.failure(f"/echo sent {size} bytes and got back {len(echoed)} different")
