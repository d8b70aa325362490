from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ModuleRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODULE_ROLE_UNSPECIFIED: _ClassVar[ModuleRole]
    CATEGORY: _ClassVar[ModuleRole]
    TASK: _ClassVar[ModuleRole]
    ADAPTER: _ClassVar[ModuleRole]
    SAMPLES: _ClassVar[ModuleRole]
MODULE_ROLE_UNSPECIFIED: ModuleRole
CATEGORY: ModuleRole
TASK: ModuleRole
ADAPTER: ModuleRole
SAMPLES: ModuleRole

class ModuleRef(_message.Message):
    __slots__ = ("module_id", "sha256", "size_bytes")
    MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    module_id: str
    sha256: str
    size_bytes: int
    def __init__(self, module_id: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class FeatureStats(_message.Message):
    __slots__ = ("feature_norm_mean", "num_images")
    FEATURE_NORM_MEAN_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    feature_norm_mean: float
    num_images: int
    def __init__(self, feature_norm_mean: _Optional[float] = ..., num_images: _Optional[int] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
