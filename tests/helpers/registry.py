"""Shared builders for coordinator tests: tiny specs/weights and a registry on loopback."""

from __future__ import annotations

from concurrent import futures

import grpc
import torch
from safetensors.torch import save as st_save

from coordinator.registry_service import RegistryService
from protos.nt.v1 import registry_pb2_grpc
from transplant.architectures import teacher_specs, vgg_small
from transplant.spec import build_module, weights_to_bytes

TINY = vgg_small(width=8, depth=3, image_size=16, in_channels=1)


def tiny_category() -> tuple[str, bytes]:
    torch.manual_seed(0)
    module = build_module(teacher_specs(TINY, ("classification",)).category)
    return module.spec.dumps(), weights_to_bytes(module)


def nan_weights(spec_json: str, data: bytes) -> bytes:
    from safetensors.torch import load
    tensors = load(data)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    return st_save(tensors)


def wrong_shape_weights(data: bytes) -> bytes:
    from safetensors.torch import load
    tensors = load(data)
    name = sorted(tensors)[0]
    tensors[name] = torch.zeros(*[s + 1 for s in tensors[name].shape])
    return st_save(tensors)


def serve_registry(service: RegistryService) -> tuple[grpc.Server, grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    registry_pb2_grpc.add_ModuleRegistryServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, grpc.insecure_channel(f"127.0.0.1:{port}")
