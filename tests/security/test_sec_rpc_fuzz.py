"""Property tests of every coordinator RPC but Upload (fuzzed in test_sec_upload_fuzz.py) and of the Predict
service: random requests built from the protobuf descriptors, sent by an admin and by a site to a running
coordinator, and by a client to a Predict replica. Property: each answer is OK or a deliberate status (never
UNKNOWN or INTERNAL) whose message has no Python in it. (The site's Evaluate: tests/site_agent.)"""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.guard import ADMIN, SITE
from protos.nt.v1 import control_pb2, control_pb2_grpc, heartbeat_pb2, heartbeat_pb2_grpc, predict_pb2, predict_pb2_grpc
from protos.nt.v1 import registry_pb2, registry_pb2_grpc
from tests.helpers.cluster import coordinator as start
from tests.helpers.cluster import issue, push_site, stubs
from tests.helpers.protofuzz import assert_clean, requests

pytestmark = pytest.mark.security
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# (service stub, method, request type, server streaming)
CALLS = [(control_pb2_grpc.ControlStub, name, getattr(control_pb2, m.input_type.name), m.server_streaming)
         for name, m in control_pb2.DESCRIPTOR.services_by_name["Control"].methods_by_name.items()]
CALLS += [(registry_pb2_grpc.ModuleRegistryStub, "Download", registry_pb2.DownloadRequest, True),
          (registry_pb2_grpc.ModuleRegistryStub, "List", registry_pb2.ListModulesRequest, False),
          (registry_pb2_grpc.ModuleRegistryStub, "Delete", registry_pb2.DeleteModuleRequest, False),
          (heartbeat_pb2_grpc.HeartbeatStub, "Ping", heartbeat_pb2.PingRequest, False)]


@pytest.fixture(scope="module")
def world(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("rpcfuzz")
    auth_file = root / "auth.json"
    tokens = {"site-a": issue(auth_file, SITE, "site-a"), "admin": issue(auth_file, ADMIN, "ops")}
    # eval_timeout 1 s: a random job that does get to run fails at evaluation (no site answers) quickly
    handle = start(root, auth_file=auth_file, eval_timeout_s=1.0)
    clients = {name: stubs(handle.address, token) for name, token in tokens.items()}
    push_site(clients["site-a"].registry, "site-a", "3", seed=0)
    yield clients
    for client in clients.values():
        client.close()
    handle.stop(grace_s=1)


def _call(client, stub_cls, name: str, request, streaming: bool) -> None:
    method = getattr(stub_cls(client.channel), name)
    try:
        if streaming:
            for _ in zip(range(3), method(request, timeout=3)):  # a few replies: a live WatchJob never ends
                pass
        else:
            method(request, timeout=10)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and streaming:
            return  # our own deadline on a stream that was answering
        assert_clean(name, err)


@FUZZ
@given(call=st.sampled_from(CALLS), who=st.sampled_from(["admin", "site-a"]), data=st.data())
def test_random_requests_get_a_deliberate_answer(world, call, who, data) -> None:
    stub_cls, name, request_cls, streaming = call
    overrides = {}
    if request_cls is control_pb2.SubmitJobRequest:  # jobs that pass the checks stay small
        overrides = {"spec": requests(control_pb2.TransplantJobSpec, steps=st.integers(-5, 30))}
    request = data.draw(requests(request_cls, **overrides), label=name)
    _call(world[who], stub_cls, name, request, streaming)


# Predict (coordinator.serving): random routes and image bytes, real images cut, bit-flipped and oversized ---

@pytest.fixture(scope="module")
def predict(tmp_path_factory):
    from coordinator.serving.images import ImageLimits
    from coordinator.serving.server import ServingConfig, start_serving
    from coordinator.store import LocalStore
    from tests.helpers.nets import base_net

    root = tmp_path_factory.mktemp("predictfuzz")
    base_net(LocalStore(root / "store"))
    auth = root / "auth.json"
    token = issue(auth, "client", "app")
    limits = ImageLimits(max_images=4, max_image_bytes=64 * 1024, max_pixels=512 * 512, max_side=1024)
    handle = start_serving(ServingConfig(f"local://{root / 'store'}", port=0, poll_s=0.5, max_wait_s=0.01,
                                         limits=limits, auth_file=auth))
    client = stubs(handle.address, token)
    yield predict_pb2_grpc.PredictStub(client.channel)
    client.close()
    handle.stop(0)


def _png(side: int, mode: str, seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    shape = (side, side) if mode == "L" else (side, side, 3)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@st.composite
def images(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "png", "cut", "flipped", "huge-header"]))
    if kind == "random":
        return draw(st.binary(max_size=256))
    data = _png(draw(st.sampled_from([1, 7, 32, 600])), draw(st.sampled_from(["L", "RGB"])), draw(st.integers(0, 9)))
    if kind == "cut":
        return data[:draw(st.integers(0, len(data)))]
    if kind == "flipped":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1:]
    if kind == "huge-header":  # a PNG claiming 60000 x 60000 pixels: a decompression bomb's header
        return data[:16] + (60000).to_bytes(4, "big") * 2 + data[24:]
    return data


@settings(FUZZ, max_examples=100)
@given(request=requests(predict_pb2.PredictRequest, category=st.sampled_from(["dog", "cat", "", " ", "x" * 99]),
                        task=st.sampled_from(["classification", "segmentation", "", "nope"]),
                        images=st.lists(images(), max_size=6)))
def test_random_predict_requests_get_a_deliberate_answer(predict, request) -> None:
    try:
        reply = predict.Predict(request, timeout=30)
    except grpc.RpcError as err:
        assert_clean("Predict", err)
        return
    assert len(reply.predictions) == len(request.images)  # answered: one prediction per image
