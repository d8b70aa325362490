"""Encoded images in, the category's input tensor out, under limits checked before decoding.

PIL reads only the header on `Image.open`, so the declared width and height are known (and refused)
before a single pixel buffer is allocated; the bytes themselves were already bounded by gRPC's
message limit and the per-image byte limit.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from coordinator.rpc_errors import InvalidRequest, TooLarge
from transplant.data.folders import preprocess_image

MIB = 1 << 20


@dataclass(frozen=True)
class ImageLimits:
    max_images: int = 64                # images in one request
    max_image_bytes: int = 4 * MIB      # one encoded image
    max_request_bytes: int = 16 * MIB   # a whole request: gRPC refuses more before reading it
    max_pixels: int = 4096 * 4096       # width x height an image header may declare
    max_side: int = 8192                # longest side; a 1 x 10000 strip is no photo

    def __post_init__(self) -> None:
        if min(self.max_images, self.max_image_bytes, self.max_pixels, self.max_side) < 1:
            raise ValueError("image limits must be positive")
        if self.max_image_bytes + 1024 > self.max_request_bytes:
            raise ValueError("the request limit must leave room for one image at its limit (and the route)")

    def check_request(self, count: int) -> None:
        if count == 0:
            raise InvalidRequest("the request carries no image")
        if count > self.max_images:
            raise TooLarge(f"{count} images in one request; this server takes at most {self.max_images}")


def decode(data: bytes, prep: dict[str, Any], index: int, limits: ImageLimits) -> torch.Tensor:
    """Image `index` of a request as the float [C, H, W] its category module reads."""
    if len(data) > limits.max_image_bytes:
        raise TooLarge(f"image {index}: {len(data)} bytes; the limit is {limits.max_image_bytes}")
    try:
        with warnings.catch_warnings():  # PIL's bomb warning (over ~179 M pixels) refuses like its error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # header only: no pixels yet
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooLarge(f"image {index}: over the limit of {limits.max_pixels} pixels ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidRequest(f"image {index}: not a readable image ({type(exc).__name__}: {exc})") from None
    with image:
        width, height = image.size
        if width * height > limits.max_pixels:
            raise TooLarge(f"image {index}: {width}x{height} pixels; the limit is {limits.max_pixels} pixels")
        if min(width, height) < 1 or max(width, height) > limits.max_side:
            raise InvalidRequest(f"image {index}: {width}x{height} pixels; each side must be 1 to "
                                 f"{limits.max_side} pixels")
        try:
            pixels = preprocess_image(image, prep["channels"], tuple(prep["size"]), prep["divide"],
                                      prep["mean"], prep["std"])
        except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt pixel data
            raise InvalidRequest(f"image {index}: corrupt image data ({type(exc).__name__}: {exc})") from None
    return torch.from_numpy(pixels)


def encode_mask(mask: torch.Tensor) -> bytes:
    """A [H, W] class-index mask as an 8-bit greyscale PNG (0 = background)."""
    buffer = io.BytesIO()
    Image.fromarray(mask.to(torch.uint8).cpu().numpy(), "L").save(buffer, format="PNG")
    return buffer.getvalue()
