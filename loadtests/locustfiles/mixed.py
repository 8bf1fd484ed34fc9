"""Mixed: the other scenarios' users together, weighted roughly as a web service's traffic
(mostly small reads, some JSON, a few uploads, downloads and WebSocket sessions)."""

from __future__ import annotations

from loadtests.locustfiles import hello, json_api, stream, upload, websocket

# Only classes bound to a name in this module are picked up by Locust; the imported modules'
# own classes are not, so each scenario's user appears here once, with its weight.


class MixedHelloUser(hello.HelloUser):
    weight = 4


class MixedJsonUser(json_api.JsonUser):
    weight = 3


class MixedUploadUser(upload.UploadUser):
    weight = 1


class MixedStreamUser(stream.StreamUser):
    weight = 1


class MixedWebSocketUser(websocket.WebSocketEchoUser):
    weight = 1
