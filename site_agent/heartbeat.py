"""Heartbeats: the site tells the coordinator, every few seconds, that it is alive and where it listens."""
from __future__ import annotations

import logging
import threading

import grpc

from common.patterns import check_target
from common.security import PLAINTEXT, ClientSecurity
from protos.nt.v1 import heartbeat_pb2, heartbeat_pb2_grpc

log = logging.getLogger(__name__)


class Heartbeat:
    """Pings the coordinator every `interval_s` so it knows this site is alive and where it listens.

    An unreachable coordinator is logged once per outage and retried on the next tick.
    """

    def __init__(self, coordinator: str, site_id: str, endpoint: str, interval_s: float = 5.0,
                 security: ClientSecurity = PLAINTEXT):
        self.site_id, self.endpoint, self.interval_s = site_id, endpoint, interval_s
        self.channel = security.channel(check_target(coordinator))
        self.stub = heartbeat_pb2_grpc.HeartbeatStub(self.channel)
        self.pings, self.failures, self._down = 0, 0, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{site_id}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def ping(self) -> bool:
        request = heartbeat_pb2.PingRequest(site_id=self.site_id, endpoint=self.endpoint)
        try:
            self.stub.Ping(request, timeout=max(1.0, self.interval_s))
        except grpc.RpcError as exc:
            self.failures += 1
            if not self._down:
                log.warning("heartbeat: coordinator not reachable (%s: %s); retrying every %.1fs",
                            exc.code().name, exc.details(), self.interval_s)
            self._down = True
            return False
        if self._down:
            log.info("heartbeat: coordinator reachable again")
        self.pings, self._down = self.pings + 1, False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.ping()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(2.0, self.interval_s))
        self.channel.close()


__all__ = ["Heartbeat"]
