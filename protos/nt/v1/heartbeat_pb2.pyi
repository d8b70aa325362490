from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PingRequest(_message.Message):
    __slots__ = ("site_id", "endpoint")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    endpoint: str
    def __init__(self, site_id: _Optional[str] = ..., endpoint: _Optional[str] = ...) -> None: ...

class PingReply(_message.Message):
    __slots__ = ("ok", "server_time")
    OK_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    server_time: float
    def __init__(self, ok: _Optional[bool] = ..., server_time: _Optional[float] = ...) -> None: ...
