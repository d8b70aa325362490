"""Property tests at the coordinator's door: random and mutated upload HEADERS + payloads + streams.

The core validators are fuzzed in tests/transplant/test_validation_fuzz.py; here the whole upload
path of the RegistryService (header checks, spooling, integrity, safetensors checks, store) is.
Properties: a rejection is always a clean UploadRejected / INVALID_ARGUMENT / RESOURCE_EXHAUSTED
(never a crash, never a hang), nothing is stored and no spool file is left; an acceptance is only
ever a module that the independent strict loaders of transplant/ accept too, stored byte-exact.
"""

from __future__ import annotations

import hashlib
import io
import pickle

import grpc
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from common.bearer import MAX_TOKEN_CHARS, bearer_token, hash_token
from coordinator.registry_service import RegistryService
from coordinator.store import LocalStore
from coordinator.manifests import list_module_records
from coordinator.tokens import TokenTable, new_token
from coordinator.validation import NAME, UploadLimits, UploadRejected
from protos.nt.v1 import chunk_pb2, common_pb2, registry_pb2, registry_pb2_grpc
from tests.helpers.cluster import TASK, site_modules
from tests.helpers.registry import serve_registry
from transplant.adapter import Adapter, AdapterConfig, adapter_from_bytes, adapter_to_bytes
from transplant.spec import ModuleSpec, weights_from_bytes

pytestmark = pytest.mark.security
FUZZ = settings(max_examples=250, deadline=None, derandomize=True,  # no deadline: a 1-byte-chunk upload took 4 s on a loaded 2-core VM
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LIMITS = UploadLimits(max_upload_bytes=256 << 10, site_quota_bytes=64 << 20)

(CAT_SPEC, CAT_DATA), (TASK_SPEC, TASK_DATA) = site_modules(0)
ADAPTER_SPEC, ADAPTER_DATA = adapter_to_bytes(Adapter(AdapterConfig(channels=8, layers=1)))
BASES = {  # role -> (header fields, payload)
    "category": (dict(role=common_pb2.CATEGORY, spec_json=CAT_SPEC, task="", feature_norm_mean=2.0), CAT_DATA),
    "task": (dict(role=common_pb2.TASK, spec_json=TASK_SPEC, task=TASK, feature_norm_mean=0.0), TASK_DATA),
    "adapter": (dict(role=common_pb2.ADAPTER, spec_json=ADAPTER_SPEC, task=TASK, feature_norm_mean=0.0),
                ADAPTER_DATA),
}


def header_of(fields: dict, data: bytes, site: str = "site-f", category: str = "3") -> registry_pb2.UploadHeader:
    header = registry_pb2.UploadHeader(site_id=site, category=category, role=fields["role"], task=fields["task"],
                                       spec_json=fields["spec_json"], sha256=hashlib.sha256(data).hexdigest(),
                                       size_bytes=len(data))
    header.stats.feature_norm_mean = fields["feature_norm_mean"]
    return header


def requests_of(header, data: bytes, chunk: int, offsets: list[int] | None = None):
    yield registry_pb2.UploadRequest(header=header)
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    offset = 0
    for index, piece in enumerate(pieces):
        sent = offsets[index] if offsets and index < len(offsets) else offset
        yield registry_pb2.UploadRequest(chunk=chunk_pb2.Chunk(data=piece, offset=sent))
        offset += len(piece)


def snapshot(store: LocalStore, spool) -> tuple:
    files = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    return files, sorted(p.name for p in spool.iterdir())


def strictly_valid(header: registry_pb2.UploadHeader, data: bytes) -> bool:
    """The independent oracle: transplant's own strict loaders + header rules."""
    if not (NAME.match(header.site_id) and NAME.match(header.category)) or len(data) > LIMITS.max_upload_bytes:
        return False
    try:
        if header.role in (common_pb2.CATEGORY, common_pb2.TASK):
            spec = ModuleSpec.loads(header.spec_json)
            tensors = weights_from_bytes(data, spec)
            return all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in tensors.values())
        if header.role == common_pb2.ADAPTER:
            adapter_from_bytes(header.spec_json, data)
            return True
    except Exception:  # noqa: BLE001 - any refusal by the oracle
        return False
    return False


@pytest.fixture
def registry(tmp_path):
    store = LocalStore(tmp_path / "store")
    spool = tmp_path / "spool"
    return store, spool, RegistryService(store, LIMITS, spool)


def check_outcome(store, spool, service, header, requests, data: bytes) -> bool:
    """Runs one upload; asserts the properties; True if it was accepted."""
    before = snapshot(store, spool)
    try:
        record = service._ingest(iter(requests))
    except UploadRejected as exc:
        assert str(exc), "a rejection must say why"
        assert snapshot(store, spool) == before, "a rejected upload changed the store or left spool files"
        return False
    assert strictly_valid(header, data), f"accepted an upload the strict loaders refuse: {header}"
    assert record.sha256 == hashlib.sha256(data).hexdigest() == header.sha256
    assert store.read_blob(record.sha256) == data
    assert record.module_id in {r.module_id for r in list_module_records(store, header.site_id)}
    assert not list(spool.iterdir())
    return True


def _pickle_payload(data: bytes) -> bytes:
    buffer = io.BytesIO()
    torch.save(st_load(data), buffer)  # a pickle: must never be accepted (nor unpickled)
    return buffer.getvalue()


class Evil:
    def __reduce__(self):
        return (eval, ("__import__('os')._exit(3)",))


def _mutate_payload(data: bytes, kind: str, draw) -> bytes:
    if kind == "keep":
        return data
    if kind == "truncate":
        return data[:draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    if kind == "flip":
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    if kind == "header_len":  # the safetensors header length prefix
        return draw(st.binary(min_size=8, max_size=8)) + data[8:]
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=4096))
    if kind == "pickle":
        return _pickle_payload(data)
    if kind == "evil_pickle":
        return pickle.dumps(Evil())
    if kind == "nan":
        tensors = st_load(data)
        name = draw(st.sampled_from(sorted(tensors)))
        tensors[name].view(-1)[draw(st.integers(0, tensors[name].numel() - 1))] = draw(
            st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        return st_save(tensors)
    if kind == "dtype":
        tensors = st_load(data)
        name = draw(st.sampled_from(sorted(tensors)))
        tensors[name] = tensors[name].to(draw(st.sampled_from([torch.float64, torch.float16, torch.int64])))
        return st_save(tensors)
    if kind == "rename":
        tensors = st_load(data)
        name = draw(st.sampled_from(sorted(tensors)))
        tensors[name + draw(st.sampled_from(["x", ".0", "_"]))] = tensors.pop(name)
        return st_save(tensors)
    if kind == "drop":
        tensors = st_load(data)
        tensors.pop(draw(st.sampled_from(sorted(tensors))))
        return st_save(tensors) if tensors else b""
    if kind == "reshape":
        tensors = st_load(data)
        name = draw(st.sampled_from(sorted(tensors)))
        tensors[name] = torch.zeros(tensors[name].numel() + draw(st.integers(1, 3)))
        return st_save(tensors)
    if kind == "metadata":  # safetensors __metadata__ is allowed: same tensors, still valid
        return st_save(st_load(data), metadata={"note": draw(st.text(max_size=20))})
    raise AssertionError(kind)


PAYLOAD_KINDS = ["keep", "truncate", "append", "flip", "header_len", "random", "pickle", "evil_pickle", "nan",
                 "dtype", "rename", "drop", "reshape", "metadata"]
HEADER_FIELDS = ["none", "site_id", "category", "role", "task", "spec_json", "spec_swap", "sha256", "size_bytes",
                 "metadata", "feature_norm_mean"]
texts = st.one_of(st.text(max_size=80), st.sampled_from(["", ".", "..", "../x", "a/b", "a" * 65, "site-f", "3",
                                                         "x\x00y", TASK, "segmentation", " "]))


@FUZZ
@given(role=st.sampled_from(sorted(BASES)), payload_kind=st.sampled_from(PAYLOAD_KINDS),
       header_field=st.sampled_from(HEADER_FIELDS), rehash=st.booleans(), chunk=st.integers(1, 70_000),
       data=st.data())
def test_mutated_uploads_are_refused_cleanly_or_strictly_valid(registry, role, payload_kind, header_field, rehash,
                                                               chunk, data) -> None:
    store, spool, service = registry
    fields, base_payload = BASES[role]
    payload = _mutate_payload(base_payload, payload_kind, data.draw)
    header = header_of(fields, payload if rehash else base_payload)
    if header_field == "site_id":
        header.site_id = data.draw(texts)
    elif header_field == "category":
        header.category = data.draw(texts)
    elif header_field == "role":
        header.role = data.draw(st.integers(-3, 12))
    elif header_field == "task":
        header.task = data.draw(texts)
    elif header_field == "spec_json":
        spec = header.spec_json
        i = data.draw(st.integers(0, len(spec)))
        header.spec_json = spec[:i] + data.draw(st.text(max_size=8)) + spec[i + data.draw(st.integers(0, 8)):]
    elif header_field == "spec_swap":  # a valid spec of another role / architecture
        header.spec_json = data.draw(st.sampled_from([CAT_SPEC, TASK_SPEC, ADAPTER_SPEC, "", "{}", "[]", "null"]))
    elif header_field == "sha256":
        header.sha256 = data.draw(st.one_of(st.text(max_size=70), st.from_regex(r"\A[0-9a-f]{64}\Z")))
    elif header_field == "size_bytes":
        header.size_bytes = data.draw(st.one_of(st.integers(0, 2 ** 64 - 1), st.integers(0, 70_000)))
    elif header_field == "metadata":
        for k, v in data.draw(st.dictionaries(st.text(max_size=300), st.text(max_size=300), max_size=40)).items():
            header.metadata[k] = v
    elif header_field == "feature_norm_mean":
        header.stats.feature_norm_mean = data.draw(st.floats(allow_nan=True, allow_infinity=True))
    accepted = check_outcome(store, spool, service, header, requests_of(header, payload, chunk), payload)
    # mutations that can never give a valid module must never be accepted
    if payload_kind in ("keep", "metadata") and header_field == "none" and (rehash or payload == base_payload):
        assert accepted, "a valid upload was refused"
    if payload_kind in ("pickle", "evil_pickle", "nan", "dtype", "rename", "drop", "reshape", "header_len",
                        "random") or (not rehash and payload != base_payload):
        assert not accepted, (payload_kind, rehash)


@FUZZ
@given(role=st.sampled_from(sorted(BASES)), chunk=st.integers(1, 40_000), data=st.data())
def test_mangled_streams_are_refused(registry, role, chunk, data) -> None:
    """Reordered, repeated, missing or misplaced chunks and headers; lying offsets."""
    store, spool, service = registry
    fields, payload = BASES[role]
    header = header_of(fields, payload)
    requests = list(requests_of(header, payload, chunk))
    how = data.draw(st.sampled_from(["shuffle", "duplicate", "drop", "second_header", "no_header", "offsets",
                                     "empty", "header_only"]))
    if how == "shuffle" and len(requests) > 2:
        body = requests[1:]
        order = data.draw(st.permutations(range(len(body))))
        assume(list(order) != sorted(order))
        requests = requests[:1] + [body[i] for i in order]
    elif how == "duplicate" and len(requests) > 1:
        i = data.draw(st.integers(1, len(requests) - 1))
        requests.insert(i, requests[i])
    elif how == "drop" and len(requests) > 1:
        del requests[data.draw(st.integers(1, len(requests) - 1))]
    elif how == "second_header":
        requests.insert(data.draw(st.integers(1, len(requests))), requests[0])
    elif how == "no_header":
        requests = requests[1:]
    elif how == "offsets" and len(requests) > 1:
        i = data.draw(st.integers(1, len(requests) - 1))
        delta = data.draw(st.sampled_from([-1, 1, 7, 1 << 40]))
        requests[i].chunk.offset += delta if requests[i].chunk.offset + delta >= 0 else 1
    elif how == "empty":
        requests = []
    elif how == "header_only":
        requests = requests[:1]
    else:
        return
    accepted = check_outcome(store, spool, service, header, requests, payload)
    assert not accepted, how


@settings(max_examples=40, deadline=5000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(role=st.sampled_from(sorted(BASES)), payload_kind=st.sampled_from(PAYLOAD_KINDS), data=st.data())
def test_over_grpc_every_refusal_has_a_clean_status(tmp_path_factory, role, payload_kind, data) -> None:
    root = tmp_path_factory.mktemp("grpc-fuzz")
    store = LocalStore(root / "store")
    server, channel = serve_registry(RegistryService(store, LIMITS, root / "spool"))
    try:
        fields, base = BASES[role]
        payload = _mutate_payload(base, payload_kind, data.draw)
        header = header_of(fields, payload if data.draw(st.booleans()) else base)
        stub = registry_pb2_grpc.ModuleRegistryStub(channel)
        try:
            stub.Upload(requests_of(header, payload, data.draw(st.integers(512, 70_000))), timeout=20)
            assert strictly_valid(header, payload)
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), \
                (exc.code(), exc.details())
            assert exc.details() and "Exception calling application" not in exc.details()
            assert not list_module_records(store)
            assert not [p for p in (root / "store" / "blobs").rglob("*") if p.is_file()]
            assert not list((root / "spool").iterdir())
    finally:
        channel.close()
        server.stop(0)


@settings(max_examples=200, deadline=1000, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(["authorization", "Authorization", "x-other"]),
                          st.one_of(st.text(max_size=700), st.binary(max_size=64).map(lambda b: "Bearer " + b.hex()),
                                    st.just("Bearer"), st.just("Bearer "))), max_size=3))
def test_random_authorization_metadata_never_authenticates(metadata) -> None:
    table = TokenTable.from_doc({"admins": {"alice": hash_token(new_token())}, "sites": {}})
    token = bearer_token(metadata)
    assert token is None or (0 < len(token) <= MAX_TOKEN_CHARS)
    assert token is None or table.identify(token) is None
