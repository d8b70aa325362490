from protos.nt.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    PENDING: _ClassVar[JobState]
    RUNNING: _ClassVar[JobState]
    EVALUATING: _ClassVar[JobState]
    SUCCEEDED: _ClassVar[JobState]
    FAILED: _ClassVar[JobState]
    CANCELLED: _ClassVar[JobState]
    REJECTED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
PENDING: JobState
RUNNING: JobState
EVALUATING: JobState
SUCCEEDED: JobState
FAILED: JobState
CANCELLED: JobState
REJECTED: JobState

class AdapterConfig(_message.Message):
    __slots__ = ("layers", "kernel_size", "reorder")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    REORDER_FIELD_NUMBER: _ClassVar[int]
    layers: int
    kernel_size: int
    reorder: bool
    def __init__(self, layers: _Optional[int] = ..., kernel_size: _Optional[int] = ..., reorder: _Optional[bool] = ...) -> None: ...

class TransplantJobSpec(_message.Message):
    __slots__ = ("category", "task", "method", "samples", "adapter", "seed", "teacher_site_id", "generic_site_id", "steps", "max_gap", "net")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEACHER_SITE_ID_FIELD_NUMBER: _ClassVar[int]
    GENERIC_SITE_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_GAP_FIELD_NUMBER: _ClassVar[int]
    NET_FIELD_NUMBER: _ClassVar[int]
    category: str
    task: str
    method: str
    samples: int
    adapter: AdapterConfig
    seed: int
    teacher_site_id: str
    generic_site_id: str
    steps: int
    max_gap: float
    net: str
    def __init__(self, category: _Optional[str] = ..., task: _Optional[str] = ..., method: _Optional[str] = ..., samples: _Optional[int] = ..., adapter: _Optional[_Union[AdapterConfig, _Mapping]] = ..., seed: _Optional[int] = ..., teacher_site_id: _Optional[str] = ..., generic_site_id: _Optional[str] = ..., steps: _Optional[int] = ..., max_gap: _Optional[float] = ..., net: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("method", "metrics", "adapter_ref", "steps", "seconds", "error", "chosen")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_REF_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    method: str
    metrics: _containers.RepeatedCompositeFieldContainer[_common_pb2.Metric]
    adapter_ref: _common_pb2.ModuleRef
    steps: int
    seconds: float
    error: str
    chosen: bool
    def __init__(self, method: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[_common_pb2.Metric, _Mapping]]] = ..., adapter_ref: _Optional[_Union[_common_pb2.ModuleRef, _Mapping]] = ..., steps: _Optional[int] = ..., seconds: _Optional[float] = ..., error: _Optional[str] = ..., chosen: _Optional[bool] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "spec", "state", "error", "created", "started", "finished", "metrics", "adapter_ref", "attempts", "net_version", "candidates", "reason", "promoted")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_REF_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NET_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    spec: TransplantJobSpec
    state: JobState
    error: str
    created: float
    started: float
    finished: float
    metrics: _containers.RepeatedCompositeFieldContainer[_common_pb2.Metric]
    adapter_ref: _common_pb2.ModuleRef
    attempts: int
    net_version: int
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    reason: str
    promoted: str
    def __init__(self, job_id: _Optional[str] = ..., spec: _Optional[_Union[TransplantJobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., error: _Optional[str] = ..., created: _Optional[float] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., metrics: _Optional[_Iterable[_Union[_common_pb2.Metric, _Mapping]]] = ..., adapter_ref: _Optional[_Union[_common_pb2.ModuleRef, _Mapping]] = ..., attempts: _Optional[int] = ..., net_version: _Optional[int] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., reason: _Optional[str] = ..., promoted: _Optional[str] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: TransplantJobSpec
    def __init__(self, spec: _Optional[_Union[TransplantJobSpec, _Mapping]] = ...) -> None: ...

class SubmitJobReply(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "category", "task", "limit")
    STATES_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    category: str
    task: str
    limit: int
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., category: _Optional[str] = ..., task: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsReply(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobReply(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "state", "step", "total_steps", "loss", "distill_loss", "task_loss", "message", "time", "method")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    DISTILL_LOSS_FIELD_NUMBER: _ClassVar[int]
    TASK_LOSS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    step: int
    total_steps: int
    loss: float
    distill_loss: float
    task_loss: float
    message: str
    time: float
    method: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., distill_loss: _Optional[float] = ..., task_loss: _Optional[float] = ..., message: _Optional[str] = ..., time: _Optional[float] = ..., method: _Optional[str] = ...) -> None: ...

class JobHistory(_message.Message):
    __slots__ = ("job_id", "events")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    events: _containers.RepeatedCompositeFieldContainer[JobEvent]
    def __init__(self, job_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ...) -> None: ...

class GetNetRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("job_id", "method", "samples", "adapter", "steps", "metric", "value", "teacher_value", "sites", "sha256", "created")
    class Sha256Entry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TEACHER_VALUE_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    method: str
    samples: int
    adapter: AdapterConfig
    steps: int
    metric: str
    value: float
    teacher_value: float
    sites: _containers.RepeatedScalarFieldContainer[str]
    sha256: _containers.ScalarMap[str, str]
    created: float
    def __init__(self, job_id: _Optional[str] = ..., method: _Optional[str] = ..., samples: _Optional[int] = ..., adapter: _Optional[_Union[AdapterConfig, _Mapping]] = ..., steps: _Optional[int] = ..., metric: _Optional[str] = ..., value: _Optional[float] = ..., teacher_value: _Optional[float] = ..., sites: _Optional[_Iterable[str]] = ..., sha256: _Optional[_Mapping[str, str]] = ..., created: _Optional[float] = ...) -> None: ...

class NetEntry(_message.Message):
    __slots__ = ("category", "task", "adapter_id", "method", "samples", "quality", "teacher_quality", "job_id", "category_module_id", "task_module_id", "provenance", "forced")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    TEACHER_QUALITY_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    category: str
    task: str
    adapter_id: str
    method: str
    samples: int
    quality: _containers.RepeatedCompositeFieldContainer[_common_pb2.Metric]
    teacher_quality: _containers.RepeatedCompositeFieldContainer[_common_pb2.Metric]
    job_id: str
    category_module_id: str
    task_module_id: str
    provenance: Provenance
    forced: bool
    def __init__(self, category: _Optional[str] = ..., task: _Optional[str] = ..., adapter_id: _Optional[str] = ..., method: _Optional[str] = ..., samples: _Optional[int] = ..., quality: _Optional[_Iterable[_Union[_common_pb2.Metric, _Mapping]]] = ..., teacher_quality: _Optional[_Iterable[_Union[_common_pb2.Metric, _Mapping]]] = ..., job_id: _Optional[str] = ..., category_module_id: _Optional[str] = ..., task_module_id: _Optional[str] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., forced: _Optional[bool] = ...) -> None: ...

class GetNetReply(_message.Message):
    __slots__ = ("name", "version", "entries", "created", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    entries: _containers.RepeatedCompositeFieldContainer[NetEntry]
    created: float
    note: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[NetEntry, _Mapping]]] = ..., created: _Optional[float] = ..., note: _Optional[str] = ...) -> None: ...

class PromoteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class PromoteJobReply(_message.Message):
    __slots__ = ("job", "net_version")
    JOB_FIELD_NUMBER: _ClassVar[int]
    NET_VERSION_FIELD_NUMBER: _ClassVar[int]
    job: Job
    net_version: int
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., net_version: _Optional[int] = ...) -> None: ...

class RollbackNetRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ListSitesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SiteInfo(_message.Message):
    __slots__ = ("site_id", "endpoint", "last_seen", "categories", "tasks", "shared_samples")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    SHARED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    endpoint: str
    last_seen: float
    categories: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    shared_samples: int
    def __init__(self, site_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., last_seen: _Optional[float] = ..., categories: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[str]] = ..., shared_samples: _Optional[int] = ...) -> None: ...

class ListSitesReply(_message.Message):
    __slots__ = ("sites",)
    SITES_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedCompositeFieldContainer[SiteInfo]
    def __init__(self, sites: _Optional[_Iterable[_Union[SiteInfo, _Mapping]]] = ...) -> None: ...
