from protos.nt.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluateRequest(_message.Message):
    __slots__ = ("job_id", "category", "task", "adapter", "task_module", "category_module", "adapter_config_json")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    TASK_MODULE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_MODULE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    category: str
    task: str
    adapter: _common_pb2.ModuleRef
    task_module: _common_pb2.ModuleRef
    category_module: _common_pb2.ModuleRef
    adapter_config_json: str
    def __init__(self, job_id: _Optional[str] = ..., category: _Optional[str] = ..., task: _Optional[str] = ..., adapter: _Optional[_Union[_common_pb2.ModuleRef, _Mapping]] = ..., task_module: _Optional[_Union[_common_pb2.ModuleRef, _Mapping]] = ..., category_module: _Optional[_Union[_common_pb2.ModuleRef, _Mapping]] = ..., adapter_config_json: _Optional[str] = ...) -> None: ...

class EvaluateReply(_message.Message):
    __slots__ = ("metrics", "num_samples", "site_id")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[_common_pb2.Metric]
    num_samples: int
    site_id: str
    def __init__(self, metrics: _Optional[_Iterable[_Union[_common_pb2.Metric, _Mapping]]] = ..., num_samples: _Optional[int] = ..., site_id: _Optional[str] = ...) -> None: ...
