"""The generated stubs and servicers work over a real (loopback) gRPC channel."""

from __future__ import annotations

from concurrent import futures

import grpc

from protos.nt.v1 import heartbeat_pb2, heartbeat_pb2_grpc


class EchoHeartbeat(heartbeat_pb2_grpc.HeartbeatServicer):
    def Ping(  # noqa: N802 - name fixed by the generated servicer
        self, request: heartbeat_pb2.PingRequest, context: grpc.ServicerContext
    ) -> heartbeat_pb2.PingReply:
        return heartbeat_pb2.PingReply(ok=request.endpoint.endswith(":50051"), server_time=42.0)


def test_ping_over_loopback() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    heartbeat_pb2_grpc.add_HeartbeatServicer_to_server(EchoHeartbeat(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = heartbeat_pb2_grpc.HeartbeatStub(channel).Ping(
                heartbeat_pb2.PingRequest(site_id="a", endpoint="10.0.0.5:50051"), timeout=5
            )
        assert reply.ok and reply.server_time == 42.0
    finally:
        server.stop(grace=None)
