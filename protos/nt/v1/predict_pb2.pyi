from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("category", "task", "images", "want_masks")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    WANT_MASKS_FIELD_NUMBER: _ClassVar[int]
    category: str
    task: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    want_masks: bool
    def __init__(self, category: _Optional[str] = ..., task: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ..., want_masks: _Optional[bool] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("score", "label", "probability", "foreground_fraction", "mask_png")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    FOREGROUND_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    score: float
    label: str
    probability: float
    foreground_fraction: float
    mask_png: bytes
    def __init__(self, score: _Optional[float] = ..., label: _Optional[str] = ..., probability: _Optional[float] = ..., foreground_fraction: _Optional[float] = ..., mask_png: _Optional[bytes] = ...) -> None: ...

class PredictReply(_message.Message):
    __slots__ = ("net", "version", "predictions")
    NET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    net: str
    version: int
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    def __init__(self, net: _Optional[str] = ..., version: _Optional[int] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ...) -> None: ...

class ListRoutesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Route(_message.Message):
    __slots__ = ("category", "task", "preprocess_json", "output_json")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    category: str
    task: str
    preprocess_json: str
    output_json: str
    def __init__(self, category: _Optional[str] = ..., task: _Optional[str] = ..., preprocess_json: _Optional[str] = ..., output_json: _Optional[str] = ...) -> None: ...

class ListRoutesReply(_message.Message):
    __slots__ = ("net", "version", "routes", "max_images", "max_image_bytes", "max_pixels", "max_request_bytes")
    NET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    net: str
    version: int
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    max_images: int
    max_image_bytes: int
    max_pixels: int
    max_request_bytes: int
    def __init__(self, net: _Optional[str] = ..., version: _Optional[int] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., max_images: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_pixels: _Optional[int] = ..., max_request_bytes: _Optional[int] = ...) -> None: ...
