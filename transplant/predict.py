"""Run a transplant net on images: the category's own preprocessing in, scores, labels and masks out.

Inputs are image files, PIL images or float tensors in [0, 1] ([C, H, W] or [N, C, H, W]). Each is
brought to what the route's category module reads (`metadata.preprocess`, or the documented default
for old specs: RGB/greyscale at the input size, bilinear, /255) by
`transplant.data.folders.preprocess_image`, the function the data loaders use.

What comes back per image (a dict):
  classification  score = the logit, probability = sigmoid(logit), label = the category when the logit
                  is above the task module's threshold (0.0 by default), else "not <category>"
  segmentation    mask = argmax over the class channels ([H, W], 0 = background),
                  foreground_fraction = share of non-background pixels, score = mean foreground
                  probability (1 - softmax background), label = the category if any pixel is foreground
Labels name the route's category, not the category the (shared, generic) task module was trained on.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F

from transplant.data.folders import preprocess_image
from transplant.spec.schema import output_of, preprocess_of
from transplant.tasks import get_task

if TYPE_CHECKING:
    from transplant.net import TransplantNet

ImageInput = Union[str, Path, Image.Image, torch.Tensor]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def check_route(net: "TransplantNet", category: str, task: str) -> None:
    """ValueError naming what exists when the net cannot answer (category, task)."""
    if category not in net.categories:
        raise ValueError(f"unknown category {category!r}: the net has {', '.join(sorted(net.categories)) or 'none'}")
    if task not in net.tasks:
        raise ValueError(f"unknown task {task!r}: the net has {', '.join(sorted(net.tasks)) or 'none'}")
    if (category, task) not in net.routes:
        served = sorted(t for c, t in net.routes if c == category)
        raise ValueError(f"the net does not serve ({category}, {task}); for {category!r} it serves "
                         f"{', '.join(served) or 'no task'}")


def preprocessing(net: "TransplantNet", category: str) -> dict[str, Any]:
    return preprocess_of(net.category_module(category).spec)


def _tensor_image(image: torch.Tensor, prep: dict[str, Any], name: str) -> torch.Tensor:
    """A [C, H, W] tensor already scaled like a decoded image ([0, 1]; uint8 is divided by 255)."""
    x = image.detach().cpu()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    channels = prep["channels"]
    if x.shape[0] == 4:  # RGBA: drop alpha, as PIL's conversion does
        x = x[:3]
    if x.shape[0] == 3 and channels == 1:  # ITU-R 601 luma, PIL's "L"
        x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    elif x.shape[0] == 1 and channels == 3:
        x = x.expand(3, -1, -1)
    if x.shape[0] != channels:
        raise ValueError(f"{name}: {image.shape[0]} channel(s) cannot be converted to the {channels} the "
                         "category module reads (give 1, 3 or 4 channels)")
    size = tuple(prep["size"])
    if tuple(x.shape[1:]) != size:  # antialias: closest to PIL's bilinear when shrinking
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    mean = torch.tensor(prep["mean"], dtype=torch.float32)[:, None, None]
    std = torch.tensor(prep["std"], dtype=torch.float32)[:, None, None]
    return (x - mean) / std


def load_image(image: ImageInput, prep: dict[str, Any], name: str | None = None) -> torch.Tensor:
    """One image as the float [C, H, W] input the category module reads; ValueError names the file."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3:
            raise ValueError(f"{name or 'tensor'}: expected [C, H, W], got shape {list(image.shape)}")
        return _tensor_image(image, prep, name or "tensor")
    args = (prep["channels"], tuple(prep["size"]), prep["divide"], prep["mean"], prep["std"])
    if isinstance(image, Image.Image):
        return torch.from_numpy(preprocess_image(image, *args))
    path = Path(image)
    try:
        with Image.open(path) as im:
            return torch.from_numpy(preprocess_image(im, *args))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


def _items(images: ImageInput | Sequence[ImageInput]) -> list[tuple[ImageInput, str]]:
    """(image, name) pairs; an [N, C, H, W] tensor is N images."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return [(img, f"image {i}") for i, img in enumerate(images)]
    if isinstance(images, (str, Path, Image.Image, torch.Tensor)):
        images = [images]
    return [(img, str(img) if isinstance(img, (str, Path)) else f"image {i}") for i, img in enumerate(images)]


def load_batch(net: "TransplantNet", images: ImageInput | Sequence[ImageInput], category: str) -> torch.Tensor:
    prep = preprocessing(net, category)
    return torch.stack([load_image(img, prep, name) for img, name in _items(images)])


@torch.no_grad()
def predict_batch(net: "TransplantNet", batch: torch.Tensor, category: str, task: str) -> list[dict[str, Any]]:
    """Scores for a batch that is already preprocessed for `category`."""
    check_route(net, category, task)
    path = net.path(category, task).eval()
    meaning = output_of(net.task_module(task).spec, category)
    interpret = get_task(meaning["kind"]).output.interpret  # what the task type's outputs mean
    return [interpret(o, meaning, category) for o in path(batch)]


def predict(net: "TransplantNet", images: ImageInput | Sequence[ImageInput], category: str,
            task: str) -> list[dict[str, Any]]:
    """One dict per image (see the module docstring); ValueError for bad input or an unknown route."""
    check_route(net, category, task)
    return predict_batch(net, load_batch(net, images, category), category, task)


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given (whatever their suffix) and every image file under folders, sorted, recursively."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(p)
    return found


def write_overlay(source: Path, mask: torch.Tensor, target: Path) -> Path:
    """The source image with its foreground pixels tinted red, at the source's own size."""
    with Image.open(source) as im:
        rgb = im.convert("RGB")
    drawn = Image.fromarray((mask.cpu().numpy() != 0).astype(np.uint8) * 255)
    fg = drawn.resize(rgb.size, Image.Resampling.NEAREST)
    tinted = Image.blend(rgb, Image.new("RGB", rgb.size, (255, 0, 0)), 0.5)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.composite(tinted, rgb, fg).save(target)
    return target


__all__ = ["IMAGE_SUFFIXES", "ImageInput", "check_route", "image_files", "load_batch", "load_image", "predict",
           "predict_batch", "preprocessing", "write_overlay"]
