"""A local store holding a grown transplant net, and a Predict replica on loopback with authentication."""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from coordinator.serving.images import ImageLimits
from coordinator.serving.server import ServingConfig, ServingHandle, start_serving
from coordinator.store import LocalStore
from coordinator.tokens import issue_token
from common.security import ClientSecurity
from protos.nt.v1 import predict_pb2_grpc
from tests.helpers.nets import base_net

LIMITS = ImageLimits(max_images=16, max_image_bytes=256 * 1024, max_request_bytes=1024 * 1024, max_pixels=1024 * 1024,
                     max_side=2048)


def png(shape: tuple[int, ...], seed: int, fmt: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@dataclass
class Tokens:
    client: str
    site: str
    admin: str


@dataclass
class Replica:
    handle: ServingHandle
    store: LocalStore
    tokens: Tokens

    def stub(self, token: str | None) -> predict_pb2_grpc.PredictStub:
        channel = ClientSecurity(token=token).channel(self.handle.address)
        return predict_pb2_grpc.PredictStub(channel)


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> Iterator[Replica]:
    root: Path = tmp_path_factory.mktemp("serving")
    store = LocalStore(root / "store")
    base_net(store)
    auth = root / "auth.json"
    tokens = Tokens(issue_token(auth, "client", "app"), issue_token(auth, "site", "site-dog"),
                    issue_token(auth, "admin", "alice"))
    handle = start_serving(ServingConfig(f"local://{root / 'store'}", port=0, poll_s=0.05, max_wait_s=0.02,
                                         limits=LIMITS, auth_file=auth, metrics_port=0))
    yield Replica(handle, store, tokens)
    handle.stop(0)


@pytest.fixture()
def call(replica) -> Iterator[predict_pb2_grpc.PredictStub]:
    yield replica.stub(replica.tokens.client)


def code_of(fn, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return info.value.code(), info.value.details()
