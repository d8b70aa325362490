"""The Predict service on a real gRPC server: same answers as the in-process net, limits, errors, auth."""
from __future__ import annotations

import io
import resource
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from urllib.request import urlopen

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from common.security import ClientSecurity
from coordinator.auth import roles_for
from coordinator.serving.loader import ModuleCache, build_served
from coordinator.serving.server import ServingConfig, start_serving
from coordinator.store import LocalStore
from coordinator.tokens import issue_token
from coordinator.manifests import load_latest_net
from protos.nt.v1 import control_pb2, heartbeat_pb2, predict_pb2, predict_pb2_grpc, registry_pb2
from tests.coordinator.serving.conftest import LIMITS, code_of, png
from tests.helpers.cluster import write_pki
from tests.helpers.nets import base_net
from transplant.architectures import CLASSIFICATION, SEGMENTATION


def _request(category: str, task: str, images: list[bytes], masks: bool = False) -> predict_pb2.PredictRequest:
    return predict_pb2.PredictRequest(category=category, task=task, images=images, want_masks=masks)


def _local(replica):
    manifest = load_latest_net(replica.store, "site-dog")
    return build_served(manifest, ModuleCache(replica.store)).net


def test_answers_equal_the_in_process_net(replica, call):
    images = [png((20, 24, 3), 1), png((16, 16), 2), png((40, 30, 4), 3)]  # RGB, greyscale, RGBA; resized
    net = _local(replica)
    pils = [Image.open(io.BytesIO(b)) for b in images]
    reply = call.Predict(_request("dog", CLASSIFICATION, images), timeout=30)
    expected = net.predict(pils, "dog", CLASSIFICATION)
    assert (reply.net, len(reply.predictions)) == ("site-dog", 3)
    assert [p.score for p in reply.predictions] == pytest.approx([e["score"] for e in expected], abs=1e-5)
    assert [p.label for p in reply.predictions] == [e["label"] for e in expected]
    seg = call.Predict(_request("dog", SEGMENTATION, images[:2], masks=True), timeout=30)
    expected = net.predict(pils[:2], "dog", SEGMENTATION)
    for got, want in zip(seg.predictions, expected):
        mask = torch.from_numpy(np.asarray(Image.open(io.BytesIO(got.mask_png)), dtype=np.int64))
        assert torch.equal(mask, want["mask"])
        assert got.foreground_fraction == pytest.approx(want["foreground_fraction"])


def test_list_routes_says_how_each_category_is_fed(call):
    reply = call.ListRoutes(predict_pb2.ListRoutesRequest(), timeout=10)
    assert [(r.category, r.task) for r in reply.routes] == [("dog", CLASSIFICATION), ("dog", SEGMENTATION)]
    assert '"size": [16, 16]' in reply.routes[0].preprocess_json
    assert reply.max_images == LIMITS.max_images


@pytest.mark.parametrize("images, code, message", [
    ([png((8, 8, 3), 0), b"\x89PNG\r\n\x1a\n not really"], grpc.StatusCode.INVALID_ARGUMENT,
     "image 1: not a readable image"),
    ([png((32, 32, 3), 0)[:80]], grpc.StatusCode.INVALID_ARGUMENT, "image 0: corrupt image data"),
    ([png((1, 3000), 0)], grpc.StatusCode.INVALID_ARGUMENT, "image 0: 3000x1 pixels; each side must be 1 to 2048"),
    ([], grpc.StatusCode.INVALID_ARGUMENT, "no image"),
    ([png((4, 4), 0)] * 17, grpc.StatusCode.RESOURCE_EXHAUSTED, "17 images in one request; this server takes at most 16"),
    ([np.random.default_rng(0).bytes(300 * 1024)], grpc.StatusCode.RESOURCE_EXHAUSTED, "image 0: 307200 bytes"),
])
def test_bad_images_get_clear_errors(call, images, code, message):
    got_code, details = code_of(call.Predict, _request("dog", CLASSIFICATION, images), timeout=30)
    assert got_code == code and message in details


def test_unknown_route_is_not_found_and_names_what_is_served(call):
    code, details = code_of(call.Predict, _request("cat", CLASSIFICATION, [png((8, 8, 3), 0)]), timeout=10)
    assert code == grpc.StatusCode.NOT_FOUND and "unknown category 'cat'" in details and "dog" in details


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height RGB pixels, with one tiny compressed row of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [2000, 60000])  # over our limit; over PIL's own bomb limit as well
def test_an_image_declaring_too_many_pixels_is_refused_before_it_is_allocated(call, side):
    bomb = _png_header_only(side, side)  # 12 MB / 10.8 GB of RGB if decoded; 100 bytes sent
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    code, details = code_of(call.Predict, _request("dog", CLASSIFICATION, [bomb]), timeout=30)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"image 0: {side}x{side} pixels; the limit is" in details or "over the limit of" in details
    assert time.monotonic() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100 * 1024  # KiB: < 100 MB more
    assert call.Predict(_request("dog", CLASSIFICATION, [png((8, 8, 3), 0)]), timeout=30).predictions


def test_a_request_over_the_message_limit_is_refused_by_the_transport(call):
    too_big = [b"\0" * (LIMITS.max_image_bytes - 1)] * (LIMITS.max_request_bytes // LIMITS.max_image_bytes + 1)
    code, details = code_of(call.Predict, _request("dog", CLASSIFICATION, too_big), timeout=30)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_only_client_and_admin_tokens_may_predict(replica):
    request = _request("dog", CLASSIFICATION, [png((8, 8, 3), 0)])
    assert code_of(replica.stub(None).Predict, request, timeout=10)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(replica.stub("forged").Predict, request, timeout=10)[0] == grpc.StatusCode.UNAUTHENTICATED
    code, details = code_of(replica.stub(replica.tokens.site).Predict, request, timeout=10)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "site 'site-dog' may not call Predict" in details
    for token in (replica.tokens.client, replica.tokens.admin):
        assert len(replica.stub(token).Predict(request, timeout=10).predictions) == 1


def test_a_client_token_reaches_no_other_service():
    for module in (control_pb2, registry_pb2, heartbeat_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert "client" not in roles_for(f"/{service.full_name}/{method.name}"), method.full_name
    assert "client" in roles_for("/transplant.v1.Predict/Predict")


def test_concurrent_requests_are_batched_and_metrics_count_them(replica, call):
    metrics = replica.handle.metrics
    before = metrics.batch_size.labels("dog", CLASSIFICATION)._sum.get()
    count_before = sum(s.value for s in metrics.batch_size.collect()[0].samples
                       if s.name.endswith("_count") and s.labels.get("category") == "dog"
                       and s.labels.get("task") == CLASSIFICATION)
    image = png((16, 16, 3), 5)
    code_of(call.Predict, _request("no-such", CLASSIFICATION, [image]), timeout=10)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: call.Predict(_request("dog", CLASSIFICATION, [image]), timeout=30), range(32)))
    images = metrics.batch_size.labels("dog", CLASSIFICATION)._sum.get() - before
    count = sum(s.value for s in metrics.batch_size.collect()[0].samples
                if s.name.endswith("_count") and s.labels.get("category") == "dog"
                and s.labels.get("task") == CLASSIFICATION) - count_before
    assert images == 32 and count < 32  # fewer forward passes than requests
    text = urlopen(f"http://127.0.0.1:{replica.handle.metrics_port}/metrics", timeout=10).read().decode()
    assert 'transplant_predict_requests_total{category="dog",code="OK",task="classification"}' in text
    assert 'transplant_predict_requests_total{category="unknown",code="NOT_FOUND",task="unknown"}' in text
    assert "transplant_predict_request_seconds_bucket" in text and "transplant_predict_net_version" in text


def test_tls_replica_answers_over_tls_with_a_client_token_and_refuses_plaintext(tmp_path):
    pki = write_pki(tmp_path / "pki")
    store = LocalStore(tmp_path / "store")
    base_net(store)
    auth = tmp_path / "auth.json"
    token = issue_token(auth, "client", "app")
    handle = start_serving(ServingConfig(f"local://{tmp_path / 'store'}", port=0, auth_file=auth,
                                         tls_cert=pki["server_cert"], tls_key=pki["server_key"]))
    try:
        request = _request("dog", CLASSIFICATION, [png((8, 8, 3), 0)])
        secure = ClientSecurity.from_files(token, pki["ca"]).channel(f"localhost:{handle.port}")
        assert len(predict_pb2_grpc.PredictStub(secure).Predict(request, timeout=30).predictions) == 1
        plain = ClientSecurity(token=token).channel(handle.address)
        assert code_of(predict_pb2_grpc.PredictStub(plain).Predict, request, timeout=10)[0] == \
            grpc.StatusCode.UNAVAILABLE
    finally:
        handle.stop(0)
