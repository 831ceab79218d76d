"""A slow policy engine on loopback: real sockets, real HTTP (tests/scripted_peer.py).

`SlowOpa` answers `/health` at once but holds every decision request until the test
ends (or 30 s pass), then answers `allow` — a late allow that must change nothing.
With `hang_up=True` it closes each decision connection without a word.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

from scripted_peer import ScriptedPeer, answer, stall
from scripted_peer import hang_up as hang_up_action

from gateway.policy import DECISION_PATH

HOLD_AT_MOST_S = 30.0


class SlowOpa(ScriptedPeer):
    def __init__(self, port: int = 0, *, hang_up: bool = False) -> None:
        super().__init__(port)
        self.answered = 0  # decision requests answered (all after the test ends)
        self.on("GET", "/health", answer(json_body={}))
        held = stall(self._late_allow, HOLD_AT_MOST_S)
        self.on("POST", DECISION_PATH, hang_up_action() if hang_up else held)

    @property
    def received(self) -> int:
        """Decision requests that arrived."""
        return self.count("POST", DECISION_PATH)

    def _late_allow(self, handler: BaseHTTPRequestHandler, peer: ScriptedPeer) -> None:
        answer(json_body={"result": {"outcome": "allow", "reasons": []}})(handler, peer)
        with self._lock:
            self.answered += 1  # not reached when the gateway gave up and closed first
