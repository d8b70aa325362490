"""Shared by the fault tests: an in-test SiteAgent that evaluates at once, and waiting for jobs."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc

from coordinator.site_identity import site_credential_sha256
from common.guard import RequireTokenInterceptor
from protos.nt.v1 import common_pb2, control_pb2, site_pb2, site_pb2_grpc
from coordinator.job_states import TERMINAL_PB as TERMINAL


class InstantSite(site_pb2_grpc.SiteAgentServicer):
    """Answers every evaluation at once (or never, while `silent` is set for that site)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.silent: set[str] = set()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def Evaluate(self, request, context):
        with self._lock:
            self.calls.append(request.job_id)
        if request.category_module.module_id.split("-category-")[0] in self.silent:
            self.release.wait(60)
            context.abort(grpc.StatusCode.UNAVAILABLE, "gone")
        return site_pb2.EvaluateReply(metrics=[common_pb2.Metric(name="error_rate", value=10.0),
                                               common_pb2.Metric(name="teacher_error_rate", value=5.0)],
                                      num_samples=1, site_id="fake")


def serve_site(servicer, token: str | None = None, threads: int = 8, sites: tuple[str, ...] = ()
               ) -> tuple[grpc.Server, str]:
    """A SiteAgent server on loopback; with `token` (the coordinator's secret), Evaluate needs the credential
    the coordinator derives for one of `sites` (each as that site's `--coordinator-token-sha256`)."""
    interceptors = [RequireTokenInterceptor([site_credential_sha256(token, s) for s in sites])] if token else []
    server = grpc.server(futures.ThreadPoolExecutor(threads), interceptors=interceptors)
    site_pb2_grpc.add_SiteAgentServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def wait_terminal(control, job_ids, timeout: float) -> dict[str, control_pb2.Job]:
    deadline, jobs = time.monotonic() + timeout, {}
    pending = list(job_ids)
    while pending:
        for job_id in list(pending):
            job = control.GetJob(control_pb2.GetJobRequest(job_id=job_id), timeout=10)
            if job.state in TERMINAL:
                jobs[job_id] = job
                pending.remove(job_id)
        if pending:
            assert time.monotonic() < deadline, f"jobs not terminal after {timeout} s: {pending}"
            time.sleep(0.2)
    return jobs


class TcpProxy:
    """A loopback TCP forwarder in front of a server, to take it 'down' (or slow) without losing its state.

    Down: open connections are cut and new ones are closed at once (the client sees resets).
    """

    def __init__(self, target: tuple[str, int]) -> None:
        import socket

        self.target, self.delay_s, self._up = target, 0.0, True
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def down(self) -> None:
        self._up = False
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            self._shut(sock)

    def up(self) -> None:
        self._up = True

    def close(self) -> None:
        self._closed.set()
        self.down()
        self._listener.close()

    @staticmethod
    def _shut(sock) -> None:
        import socket

        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def _accept(self) -> None:
        import socket

        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up:
                self._shut(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._shut(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst) -> None:
        try:
            while data := src.recv(65536):
                if self.delay_s:
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with self._lock:
                    self._open.discard(sock)
                self._shut(sock)


def crashing_body(marker_dir: str, times: dict[str, int], plan, progress_every: int, blobs):
    """A candidate's Ray task body (coordinator.training.TRAIN_BODY) that dies like a crashed Ray worker
    (os._exit) after its first progress event, on each of the first `times[category]` attempts, counted
    by marker files in `marker_dir` (shared by the test and the Ray workers)."""
    import os
    from pathlib import Path

    from coordinator.worker import run_plan

    folder, limit = Path(marker_dir), times.get(plan.category.category, 0)
    crashes = len(list(folder.glob(f"{plan.job_id}.crash-*")))
    for item in run_plan(plan, progress_every, blobs):
        yield item
        if crashes < limit:
            (folder / f"{plan.job_id}.crash-{crashes}").touch()
            os._exit(1)
