from protos.nt.v1 import chunk_pb2 as _chunk_pb2
from protos.nt.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UploadHeader(_message.Message):
    __slots__ = ("site_id", "category", "role", "task", "spec_json", "sha256", "size_bytes", "stats", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    category: str
    role: _common_pb2.ModuleRole
    task: str
    spec_json: str
    sha256: str
    size_bytes: int
    stats: _common_pb2.FeatureStats
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, site_id: _Optional[str] = ..., category: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.ModuleRole, str]] = ..., task: _Optional[str] = ..., spec_json: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., stats: _Optional[_Union[_common_pb2.FeatureStats, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: _chunk_pb2.Chunk
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[_Union[_chunk_pb2.Chunk, _Mapping]] = ...) -> None: ...

class UploadReply(_message.Message):
    __slots__ = ("module_id", "sha256", "size_bytes")
    MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    module_id: str
    sha256: str
    size_bytes: int
    def __init__(self, module_id: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ModuleInfo(_message.Message):
    __slots__ = ("module_id", "spec_json", "sha256", "size_bytes", "site_id", "category", "role", "task", "stats", "metadata", "created")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    module_id: str
    spec_json: str
    sha256: str
    size_bytes: int
    site_id: str
    category: str
    role: _common_pb2.ModuleRole
    task: str
    stats: _common_pb2.FeatureStats
    metadata: _containers.ScalarMap[str, str]
    created: float
    def __init__(self, module_id: _Optional[str] = ..., spec_json: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., site_id: _Optional[str] = ..., category: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.ModuleRole, str]] = ..., task: _Optional[str] = ..., stats: _Optional[_Union[_common_pb2.FeatureStats, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created: _Optional[float] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("module_id", "chunk_size")
    MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    module_id: str
    chunk_size: int
    def __init__(self, module_id: _Optional[str] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class DownloadReply(_message.Message):
    __slots__ = ("info", "chunk")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    info: ModuleInfo
    chunk: _chunk_pb2.Chunk
    def __init__(self, info: _Optional[_Union[ModuleInfo, _Mapping]] = ..., chunk: _Optional[_Union[_chunk_pb2.Chunk, _Mapping]] = ...) -> None: ...

class ListModulesRequest(_message.Message):
    __slots__ = ("site_id", "category", "role", "task")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    category: str
    role: _common_pb2.ModuleRole
    task: str
    def __init__(self, site_id: _Optional[str] = ..., category: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.ModuleRole, str]] = ..., task: _Optional[str] = ...) -> None: ...

class ListModulesReply(_message.Message):
    __slots__ = ("modules",)
    MODULES_FIELD_NUMBER: _ClassVar[int]
    modules: _containers.RepeatedCompositeFieldContainer[ModuleInfo]
    def __init__(self, modules: _Optional[_Iterable[_Union[ModuleInfo, _Mapping]]] = ...) -> None: ...

class DeleteModuleRequest(_message.Message):
    __slots__ = ("module_id", "site_id")
    MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    module_id: str
    site_id: str
    def __init__(self, module_id: _Optional[str] = ..., site_id: _Optional[str] = ...) -> None: ...

class DeleteModuleReply(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...
