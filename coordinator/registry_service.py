"""ModuleRegistry servicer: sites push and fetch modules (JSON spec + safetensors weights)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from common.patterns import BASE_SITE, CATEGORY, CHUNK_SIZE, MAX_CHUNK_SIZE, TASK
from common.stages import read_ahead
from coordinator import auth, validation
from coordinator.convert import module_info, role_name
from coordinator.ingest import ingest
from coordinator.telemetry import CoordinatorMetrics
from coordinator.store import BlobInfo, BlobNotFoundError, Store, StoreError
from coordinator.manifests import (ModuleRecord, delete_module_record, list_module_records,
                                         load_module_record, module_id, save_module_record)
from coordinator.streams import StreamLimits, StreamSlots, StreamTimeout, TooManyStreams, watched
from coordinator.validation import UploadLimits, UploadRejected
from protos.nt.v1 import chunk_pb2, registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)


class RegistryService(registry_pb2_grpc.ModuleRegistryServicer):
    def __init__(self, store: Store, limits: UploadLimits = UploadLimits(),
                 spool_dir: Path | None = None, metrics: CoordinatorMetrics | None = None,
                 streams: StreamLimits = StreamLimits()) -> None:
        self.store, self.limits, self.spool_dir = store, limits, spool_dir
        self.metrics, self.streams = metrics, streams
        self._slots = StreamSlots(streams.per_site)
        # bytes of uploads in flight per site: two concurrent uploads must not both fit one quota
        self._in_flight: dict[str, int] = {}
        self._quota_lock = threading.Lock()
        if spool_dir is not None:  # uploads go straight to the store now; spool files of older versions go
            spool_dir.mkdir(parents=True, exist_ok=True)
            for stale in spool_dir.glob("upload-*.safetensors"):
                stale.unlink(missing_ok=True)
        try:  # writes a coordinator killed mid-upload left: tmp files, S3 multipart uploads
            if aborted := store.abort_stale_writes(time.time()):
                log.info("removed %d unfinished upload(s) of an earlier run", aborted)
        except StoreError as exc:
            log.warning("could not look for unfinished uploads of an earlier run: %s", exc)

    def Upload(self, request_iterator, context):
        try:
            record = self._ingest(watched(request_iterator, self.streams.idle_s, self.streams.deadline_s))
        except TooManyStreams as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except StreamTimeout as exc:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"upload abandoned, nothing stored: {exc}")
        except UploadRejected as exc:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.quota else grpc.StatusCode.INVALID_ARGUMENT
            context.abort(code, str(exc))
        except auth.PermissionDenied as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except StoreError as exc:  # after the store's own bounded retries; nothing became visible
            log.warning("upload failed on the object store: %s", exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"object store unavailable, upload not stored: {exc}")
        log.info("stored module %s (%d bytes)", record.module_id, record.size_bytes)
        if self.metrics is not None:
            self.metrics.bytes_received.labels(record.site_id).inc(record.size_bytes)
        return registry_pb2.UploadReply(module_id=record.module_id, sha256=record.sha256,
                                        size_bytes=record.size_bytes)

    def _ingest(self, requests: Iterator[registry_pb2.UploadRequest]) -> ModuleRecord:
        first = next(requests, None)
        if first is None or first.WhichOneof("payload") != "header":
            raise UploadRejected("the first upload message must be the header")
        header = first.header
        caller = auth.current_caller()
        if caller is not None and caller.role != auth.SITE and not (caller.role == auth.ADMIN
                                                                    and header.site_id == BASE_SITE):
            raise auth.PermissionDenied(f"{caller} may not upload modules: only sites do (admins: shared bases, "
                                        f"as site {BASE_SITE!r})")
        if caller is not None and caller.role == auth.SITE and header.site_id == BASE_SITE:
            raise auth.PermissionDenied(f"site {caller.name!r} may not upload as {BASE_SITE!r}: admins publish bases")
        auth.check_site(header.site_id, "upload modules")
        role = role_name(header.role)
        stored = sum(r.size_bytes for r in list_module_records(self.store, header.site_id)) \
            if validation.NAME.match(header.site_id) else 0
        with self._slots.hold(header.site_id), self._reservation(header, role, stored):
            spec = validation.parse_spec(role, header.spec_json)
            check = validation.weights_check(role, spec, self.limits, header.size_bytes)
            with self.store.open_writer(header.sha256, header.size_bytes) as writer:  # aborts unless committed
                received, tensors = ingest(_chunks(requests), header.size_bytes, check, writer)  # one pass
                validation.check_integrity(received, header.sha256, header.size_bytes)
                writer.commit(received)  # valid: now, only now
            record = _record(header, role, received, validation.samples_count(role, tensors))
            existing = load_module_record(self.store, record.module_id, record.site_id)
            if existing is not None:
                return existing  # the very same spec, weights and statistics: already stored, never rewritten
            save_module_record(self.store, record)  # last: the module becomes visible
        return record

    @contextmanager
    def _reservation(self, header: registry_pb2.UploadHeader, role: str, stored: int) -> Iterator[None]:
        """Check the header against the limits counting the site's stored and in-flight bytes, and hold
        its declared size as in flight until the upload is stored or fails (one coordinator process)."""
        site, size = header.site_id, header.size_bytes
        with self._quota_lock:
            validation.check_header(header, role, self.limits, stored + self._in_flight.get(site, 0))
            self._in_flight[site] = self._in_flight.get(site, 0) + size
        try:
            yield
        finally:
            with self._quota_lock:
                left = self._in_flight.pop(site) - size
                if left:
                    self._in_flight[site] = left

    def Download(self, request, context):
        try:
            record = load_module_record(self.store, request.module_id) if validation.NAME.match(
                request.module_id) else None
        except StoreError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"object store unavailable: {exc}")
        if record is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no module {request.module_id!r}")
        try:
            auth.check_download(record.site_id, record.role)  # the download policy, one place: coordinator.auth
        except auth.PermissionDenied as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        size = min(request.chunk_size or CHUNK_SIZE, MAX_CHUNK_SIZE)
        try:
            pieces = self.store.open_blob(record.sha256, size)
        except BlobNotFoundError:
            context.abort(grpc.StatusCode.DATA_LOSS, f"weights of module {record.module_id} are missing")
        except StoreError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"object store unavailable: {exc}")
        yield registry_pb2.DownloadReply(info=module_info(record))
        offset = 0
        for piece in read_ahead(pieces):  # the next piece is read from the store while this one is sent
            yield registry_pb2.DownloadReply(chunk=chunk_pb2.Chunk(data=piece, offset=offset))
            offset += len(piece)
            if self.metrics is not None:
                self.metrics.bytes_sent.inc(len(piece))

    def List(self, request, context):
        caller = auth.current_caller()
        site = request.site_id or (caller.name if caller is not None and caller.role == auth.SITE else None)
        if site is not None and not validation.NAME.match(site):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid site id {site!r}")
        role = role_name(request.role) or None
        # another site's category or task modules, asked for by role: their specs only (a site joining that
        # net takes its architecture, `site_agent train --like-site`), never ids, digests, statistics or samples
        architecture_only = (caller is not None and caller.role == auth.SITE and site not in (caller.name, BASE_SITE)
                             and role in (CATEGORY, TASK))
        if site != BASE_SITE and not architecture_only:  # a site lists its own modules, and the shared bases
            auth.check_site_context(context, site, "list modules")
        try:
            records = list_module_records(self.store, site, role)
        except StoreError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"object store unavailable: {exc}")
        keep = [r for r in records if (not request.category or r.category == request.category)
                and (not request.task or r.task == request.task)]
        infos = [module_info(r) for r in keep]
        if architecture_only:
            infos = [registry_pb2.ModuleInfo(spec_json=i.spec_json, site_id=i.site_id, category=i.category,
                                             role=i.role, task=i.task, created=i.created) for i in infos]
        return registry_pb2.ListModulesReply(modules=infos)

    def Delete(self, request, context):
        if not validation.NAME.match(request.module_id) or not validation.NAME.match(request.site_id):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "module_id and site_id are required")
        auth.check_site_context(context, request.site_id, "delete modules")
        try:
            return self._delete(request, context)
        except StoreError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"object store unavailable, nothing deleted: {exc}")

    def _delete(self, request, context):
        record = load_module_record(self.store, request.module_id)
        if record is None:
            return registry_pb2.DeleteModuleReply(deleted=False)
        if record.site_id != request.site_id:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"module {request.module_id} belongs to site {record.site_id!r}")
        delete_module_record(self.store, record.site_id, record.module_id)
        if not any(r.sha256 == record.sha256 for r in list_module_records(self.store)):
            self.store.delete_blob(record.sha256)  # content-addressed: only when nobody else uses it
        return registry_pb2.DeleteModuleReply(deleted=True)


def _chunks(requests: Iterator[registry_pb2.UploadRequest]) -> Iterator[tuple[bytes, int]]:
    for request in requests:
        if request.WhichOneof("payload") != "chunk":
            raise UploadRejected("only chunks may follow the header")
        yield request.chunk.data, request.chunk.offset


def _record(header, role: str, spooled: BlobInfo, samples: int) -> ModuleRecord:
    norm, images = float(header.stats.feature_norm_mean), samples or int(header.stats.num_images)
    return ModuleRecord(
        module_id=module_id(header.site_id, role, header.category, header.task, header.spec_json, spooled.sha256,
                            norm, images),
        site_id=header.site_id, category=header.category, role=role, task=header.task,
        spec_json=header.spec_json, sha256=spooled.sha256, size_bytes=spooled.size,
        feature_norm_mean=norm, num_images=images, metadata=dict(header.metadata))
