"""The Predict servicer: route check, limits, decoding in the calling thread, forward in the batcher."""
from __future__ import annotations

import json
import time
from collections.abc import Hashable
from typing import Any, cast

import grpc
import torch

from coordinator.rpc_errors import NotFound, NotReady, grpc_errors, status_for
from coordinator.serving.batcher import Batcher, BatcherClosed
from coordinator.serving.images import ImageLimits, decode, encode_mask
from coordinator.serving.loader import NetHolder, Served
from coordinator.serving.metrics import UNKNOWN, ServingMetrics
from protos.nt.v1 import predict_pb2, predict_pb2_grpc
from transplant.predict import check_route, predict_batch, preprocessing
from transplant.spec.schema import output_of

WAIT_S = 60.0  # longest a request waits for its batch (a forward of tiny nets takes milliseconds)


def run_batch(route: Hashable, items: list[tuple[Served, torch.Tensor]]) -> list[dict[str, Any]]:
    """One forward per net version among the items (one, except across a hot swap)."""
    category, task = cast(tuple[str, str], route)  # the batcher's keys are (category, task) routes
    results: list[dict[str, Any]] = []
    start = 0
    while start < len(items):
        served = items[start][0]
        end = start
        while end < len(items) and items[end][0] is served:
            end += 1
        batch = torch.stack([x for _, x in items[start:end]])
        results += predict_batch(served.net, batch, category, task)
        start = end
    return results


class PredictService(predict_pb2_grpc.PredictServicer):
    def __init__(self, holder: NetHolder, limits: ImageLimits, batcher: Batcher, metrics: ServingMetrics) -> None:
        self.holder, self.limits, self.batcher, self.metrics = holder, limits, batcher, metrics

    @grpc_errors
    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> predict_pb2.PredictReply:
        started, labels = time.perf_counter(), (UNKNOWN, UNKNOWN)
        try:
            served = self.holder.current()
            labels = self._route(served, request.category, request.task)
            reply = self._predict(served, request)
        except Exception as exc:
            status = status_for(exc)
            self.metrics.requests.labels(*labels, (status[0] if status else grpc.StatusCode.UNKNOWN).name).inc()
            raise
        self.metrics.requests.labels(*labels, grpc.StatusCode.OK.name).inc()
        self.metrics.images.labels(*labels).inc(len(request.images))
        self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)
        return reply

    @staticmethod
    def _route(served: Served, category: str, task: str) -> tuple[str, str]:
        try:
            check_route(served.net, category, task)
        except ValueError as exc:
            raise NotFound(f"net {served.name!r} v{served.version}: {exc}") from None
        return category, task

    def _predict(self, served: Served, request: predict_pb2.PredictRequest) -> predict_pb2.PredictReply:
        self.limits.check_request(len(request.images))
        prep = preprocessing(served.net, request.category)
        try:
            with self.batcher.announce((request.category, request.task)) as submit:
                tensors = [decode(data, prep, i, self.limits) for i, data in enumerate(request.images)]
                future = submit([(served, x) for x in tensors])
            results = future.result(timeout=WAIT_S)
        except TimeoutError:
            raise NotReady(f"no forward pass within {WAIT_S:.0f} s: the replica is overloaded") from None
        except BatcherClosed:
            raise NotReady("the replica is shutting down; retry on another") from None
        return predict_pb2.PredictReply(net=served.name, version=served.version,
                                        predictions=[_prediction(r, request.want_masks) for r in results])

    @grpc_errors
    def ListRoutes(self, request: predict_pb2.ListRoutesRequest, context: grpc.ServicerContext
                   ) -> predict_pb2.ListRoutesReply:
        served = self.holder.current()
        net = served.net
        routes = [predict_pb2.Route(category=c, task=t, preprocess_json=json.dumps(preprocessing(net, c)),
                                    output_json=json.dumps(output_of(net.task_module(t).spec, c)))
                  for c, t in sorted(net.routes)]
        return predict_pb2.ListRoutesReply(net=served.name, version=served.version, routes=routes,
                                           max_images=self.limits.max_images,
                                           max_image_bytes=self.limits.max_image_bytes,
                                           max_pixels=self.limits.max_pixels,
                                           max_request_bytes=self.limits.max_request_bytes)


def _prediction(result: dict[str, Any], want_mask: bool) -> predict_pb2.Prediction:
    message = predict_pb2.Prediction(score=result["score"], label=result["label"],
                                     probability=result.get("probability", 0.0),
                                     foreground_fraction=result.get("foreground_fraction", 0.0))
    if want_mask and "mask" in result:
        message.mask_png = encode_mask(result["mask"])
    return message
