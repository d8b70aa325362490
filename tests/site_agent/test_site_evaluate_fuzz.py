"""Property tests of SiteAgent.Evaluate (the request path a hostile coordinator credential could reach, beside
the upload fuzzing of tests/security/test_sec_upload_fuzz.py): random requests from the descriptor, and a
valid request with one part mutated (the adapter config's JSON, the refs, the adapter's weights as the
registry serves them). Properties: every answer is OK with finite metrics or a deliberate status (never
UNKNOWN/INTERNAL, no Python in the message), every answer comes within seconds, and the site's memory stays
flat over the whole run (no config makes it allocate what it then refuses)."""

from __future__ import annotations

import hashlib
import json
import math
import resource
import struct
import time

import grpc
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from protos.nt.v1 import common_pb2, registry_pb2, site_pb2
from tests.helpers.protofuzz import assert_clean, requests
from tests.site_agent.test_site_evaluate import serve

pytestmark = pytest.mark.security
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SECONDS = 5.0  # the longest a single answer may take (a refusal takes milliseconds; an evaluation < 1 s)
NUMBERS = st.one_of(st.integers(-3, 9), st.sampled_from([0, 1, 8, 4096, 2 ** 31, 10 ** 12, -(2 ** 40)]),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                    st.sampled_from(["8", "", [], {}, [1, 2]]))
KEYS = ["format", "channels", "layers", "kernel_size", "beta", "permutation", "metadata", "extra"]


@pytest.fixture(scope="module")
def site(workspace):
    from tests.site_agent.conftest import FakeCoordinator, FakeHeartbeat, FakeRegistry  # one fake, shared
    from concurrent import futures

    from protos.nt.v1 import heartbeat_pb2_grpc, registry_pb2_grpc

    registry, heartbeat = FakeRegistry(), FakeHeartbeat()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    registry_pb2_grpc.add_ModuleRegistryServicer_to_server(registry, server)
    heartbeat_pb2_grpc.add_HeartbeatServicer_to_server(heartbeat, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    coordinator = FakeCoordinator(f"127.0.0.1:{port}", registry, heartbeat)
    stub, request, handle, channel = serve(workspace, coordinator)
    stub.Evaluate(request, timeout=60)  # warm: the first evaluation loads the held-out data
    yield stub, request, registry
    channel.close()
    handle.stop(grace=0)
    server.stop(0).wait()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, KiB on Linux


def call(stub, request) -> None:
    start = time.monotonic()
    try:
        reply = stub.Evaluate(request, timeout=30)
    except grpc.RpcError as err:
        assert_clean("Evaluate", err)
    else:
        assert reply.metrics and all(math.isfinite(m.value) for m in reply.metrics)
    assert time.monotonic() - start < SECONDS, "an answer took too long"


@st.composite
def configs(draw) -> str:
    """Adapter configs: the valid one with keys changed, dropped or added; sometimes not JSON at all."""
    kind = draw(st.sampled_from(["mutated", "mutated", "nested", "text"]))
    if kind == "text":
        return draw(st.sampled_from(["", "{", "null", "[]", "1", '"x"', "{}", "\x00", "{\"channels\": 1e999}"]))
    if kind == "nested":
        depth = draw(st.sampled_from([10, 1000, 100_000]))
        return "[" * depth + "]" * depth
    return json.dumps(draw(st.fixed_dictionaries({}, optional={key: NUMBERS for key in KEYS})))


def _header_bomb(shape: list[int]) -> bytes:
    """A safetensors header declaring a huge tensor, with almost no data behind it."""
    header = json.dumps({"convs.0.weight": {"dtype": "F32", "shape": shape, "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\x00" * 4


@st.composite
def weights(draw, good: bytes) -> bytes:
    kind = draw(st.sampled_from(["random", "cut", "flipped", "bomb", "nan", "wrong-shape", "pickle"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    if kind == "cut":
        return good[:draw(st.integers(0, len(good) - 1))]
    if kind == "flipped":
        at = draw(st.integers(0, len(good) - 1))
        return good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1:]
    if kind == "bomb":
        return _header_bomb(draw(st.sampled_from([[4096, 4096, 3, 3], [2 ** 31, 2 ** 31], [-1, 8, 1, 1]])))
    if kind == "pickle":
        return b"\x80\x04\x95" + b"\x00" * 64
    channels = 8 if kind == "wrong-shape" else None
    tensor = torch.full((channels or 4, channels or 4, 1, 1), float("nan"))
    return st_save({"convs.0.weight": tensor, "convs.0.bias": torch.zeros(tensor.shape[0])})


def with_weights(registry, request, data: bytes) -> site_pb2.EvaluateRequest:
    """The request, its adapter served by the registry as `data` (the ref's sha256 matches what is served)."""
    module_id = registry.add(registry_pb2.UploadHeader(site_id="coordinator", category=request.category,
                                                       role=common_pb2.ADAPTER,
                                                       spec_json=request.adapter_config_json), data)
    changed = site_pb2.EvaluateRequest()
    changed.CopyFrom(request)
    changed.adapter.CopyFrom(common_pb2.ModuleRef(module_id=module_id, sha256=hashlib.sha256(data).hexdigest(),
                                                  size_bytes=len(data)))
    return changed


@FUZZ
@given(request=requests(site_pb2.EvaluateRequest))
def test_random_requests_get_a_deliberate_answer(site, request) -> None:
    call(site[0], request)


@FUZZ
@given(part=st.sampled_from(["config", "weights", "refs", "names"]), data=st.data())
def test_a_valid_request_with_one_part_mutated(site, part, data) -> None:
    stub, valid, registry = site
    before = rss_mb()
    request = site_pb2.EvaluateRequest()
    request.CopyFrom(valid)
    if part == "config":
        request.adapter_config_json = data.draw(configs(), label="config")
    elif part == "weights":
        good = registry.modules[valid.adapter.module_id].data
        request = with_weights(registry, request, data.draw(weights(good), label="weights"))
    elif part == "refs":  # refs swapped between roles, or pointing at nothing
        refs = [valid.adapter, valid.task_module, valid.category_module, common_pb2.ModuleRef(module_id="nope")]
        for field in ("adapter", "task_module", "category_module"):
            if data.draw(st.booleans(), label=f"swap {field}"):
                getattr(request, field).CopyFrom(data.draw(st.sampled_from(refs), label=field))
    else:
        for field, values in (("job_id", ["", "job-x", "../../etc", "x" * 300]), ("task", ["", "nope", "segmentation"]),
                              ("category", ["", "3", "5", "\x00"])):
            if data.draw(st.booleans(), label=f"change {field}"):
                setattr(request, field, data.draw(st.sampled_from(values), label=field))
    call(stub, request)
    assert rss_mb() - before < 200, "one request grew the site's peak memory by more than 200 MB"
