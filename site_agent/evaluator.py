"""Evaluate a transplanted net on this site's held-out data (the logic of SiteAgent.Evaluate).

The coordinator sends refs (module id + sha256) to an adapter, a generic task module and this
site's own category module. The site downloads them itself, checks every byte against the refs,
runs category -> adapter -> task on its local test split and returns only metrics.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc

from common.errors import RegistryError
from common.patterns import SHA256_HEX
from protos.nt.v1 import common_pb2, registry_pb2, site_pb2
from transplant.adapter import Adapter, AdapterConfig, AdapterConfigError, adapter_from_bytes
from transplant.data import Split
from transplant.metrics import evaluate
from transplant.net import join
from transplant.spec import (ModuleSpec, SpecError, SpecModule, WeightsError, build_module, output_shape,
                            weights_from_bytes)
from transplant.tasks import get_task

from site_agent.client import RegistryClient
from site_agent.workspace import category_sha256, eval_split, load_info, load_spec_module

log = logging.getLogger(__name__)


class EvaluateError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _invalid(message: str) -> EvaluateError:
    return EvaluateError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _eval_split(split: Split, task: str) -> Split:
    """The images the task type is scored on (segmentation: the positives), as in evaluate_teacher."""
    keep = get_task(task).keep(split.labels)
    return split if keep is None else split.take(keep.nonzero().flatten())


class SiteEvaluator:
    """The Evaluate logic without gRPC plumbing: workspace, local test split, registry downloads."""

    def __init__(self, workspace: Path | str, registry: RegistryClient):
        self.workspace, self.registry = Path(workspace), registry
        self.info = load_info(workspace)
        self.own_sha256 = category_sha256(workspace)
        self.category = load_spec_module(workspace)
        self.tasks = {t: load_spec_module(workspace, t) for t in self.info.tasks}
        self.test = eval_split(self.info)  # reloaded from the data source, never stored
        self._teacher: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def teacher_metrics(self, task: str) -> dict[str, float]:
        """The site's own teacher on the same split: the bar the transplant is compared with."""
        with self._lock:
            if task not in self._teacher:
                split = _eval_split(self.test, task)
                net = join(self.category, self.tasks[task])
                self._teacher[task] = evaluate(net, task, split.images, split.labels, split.masks)
            return self._teacher[task]

    def evaluate(self, request: site_pb2.EvaluateRequest) -> site_pb2.EvaluateReply:
        self._check_request(request)
        category = self._fetch_module(request.category_module, "category module", common_pb2.CATEGORY)
        adapter = self._fetch_adapter(request, output_shape(category.spec)[0])  # checked before it is built
        task = self._fetch_module(request.task_module, f"{request.task} task module", common_pb2.TASK, request.task)
        _check_shapes(category, adapter, task)
        split = _eval_split(self.test, request.task)
        metrics = evaluate(join(category, task, adapter), request.task, split.images, split.labels, split.masks)
        metrics.update({f"teacher_{k}": v for k, v in self.teacher_metrics(request.task).items()})
        log.info("job %s: %s/%s on %d images: %s", request.job_id, request.category, request.task, len(split), metrics)
        return site_pb2.EvaluateReply(
            metrics=[common_pb2.Metric(name=k, value=float(v)) for k, v in sorted(metrics.items())],
            num_samples=len(split), site_id=self.info.site_id)

    def _check_request(self, request: site_pb2.EvaluateRequest) -> None:
        if request.task not in self.tasks:
            raise _invalid(f"site '{self.info.site_id}' has no '{request.task}' task to evaluate "
                           f"(it has: {', '.join(self.tasks)})")
        if request.category and request.category != self.info.category:
            raise _invalid(f"site '{self.info.site_id}' holds category '{self.info.category}', "
                           f"not '{request.category}'")
        for name, ref in (("adapter", request.adapter), ("task_module", request.task_module),
                          ("category_module", request.category_module)):
            if not ref.module_id or not SHA256_HEX.match(ref.sha256):
                raise _invalid(f"{name} ref needs a module_id and a lowercase hex sha256")
        if not request.adapter_config_json:
            raise _invalid("adapter_config_json is empty")
        if request.category_module.sha256 != self.own_sha256:
            # Evaluating another site's category module would run its net on our data: refuse.
            raise EvaluateError(grpc.StatusCode.PERMISSION_DENIED,
                                f"category module {request.category_module.module_id} is not site "
                                f"'{self.info.site_id}''s own (sha256 differs from the local module)")

    def _download(self, ref: common_pb2.ModuleRef, what: str) -> tuple[registry_pb2.ModuleInfo, bytes | bytearray]:
        try:
            return self.registry.download(ref.module_id, ref.sha256, ref.size_bytes, f"{what} {ref.module_id}")
        except RegistryError as exc:  # unreachable: UNAVAILABLE; no code: the bytes failed our checks
            raise EvaluateError(exc.code or grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None

    def _fetch_module(self, ref: common_pb2.ModuleRef, what: str, role: int, task: str = "") -> SpecModule:
        info, data = self._download(ref, what)
        if info.role not in (role, common_pb2.MODULE_ROLE_UNSPECIFIED):
            raise _invalid(f"{what} {ref.module_id} is a {common_pb2.ModuleRole.Name(info.role)} module")
        if task and info.task and info.task != task:
            raise _invalid(f"{what} {ref.module_id} solves '{info.task}', not '{task}'")
        if role == common_pb2.CATEGORY and info.site_id and info.site_id != self.info.site_id:
            raise EvaluateError(grpc.StatusCode.PERMISSION_DENIED,
                                f"{what} {ref.module_id} belongs to site '{info.site_id}'")
        try:
            spec = ModuleSpec.loads(info.spec_json)
            return build_module(spec, weights_from_bytes(data, spec))
        except (SpecError, WeightsError) as exc:
            raise _invalid(f"{what} {ref.module_id} is malformed: {exc}") from None

    def _fetch_adapter(self, request: site_pb2.EvaluateRequest, channels: int) -> Adapter:
        try:  # the config is checked against our category module before a byte of weights is fetched
            config = AdapterConfig.loads(request.adapter_config_json)
        except AdapterConfigError as exc:
            raise _invalid(f"adapter {request.adapter.module_id} is malformed: {exc}") from None
        if config.channels != channels:
            raise _invalid(f"adapter has {config.channels} channels, the category module outputs {channels}")
        _, data = self._download(request.adapter, "adapter")
        try:
            return adapter_from_bytes(request.adapter_config_json, data, channels)
        except AdapterConfigError as exc:
            raise _invalid(f"adapter {request.adapter.module_id} is malformed: {exc}") from None


def _check_shapes(category: SpecModule, adapter: Adapter, task: SpecModule) -> None:
    features = tuple(output_shape(category.spec))
    if adapter.config.channels != features[0]:
        raise _invalid(f"adapter has {adapter.config.channels} channels, the category module outputs {list(features)}")
    if tuple(task.spec.input_shape) != features:
        raise _invalid(f"task module reads {list(task.spec.input_shape)}, the category module outputs {list(features)}")


__all__ = ["EvaluateError", "SiteEvaluator"]
