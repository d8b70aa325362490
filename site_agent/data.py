"""Dataset sources a site trains on, as one string: `digits:3`, `shapes:cat`, `folder:PATH:CLASS`, `voc:PATH:CLASS`.

The string, size and seed are all a workspace records about its data: the held-out split is
reloaded from them (deterministically) instead of being copied anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

from transplant.architectures import CLASSIFICATION, SEGMENTATION
from transplant.data import (CategoryDataset, load_digits_category, load_image_folder, load_shapes_category,
                             load_voc_folder)

from site_agent.errors import SiteAgentError

KINDS = ("digits", "shapes", "folder", "voc")
SOURCE_HELP = "digits:<0-9> | shapes:<name> | folder:<path>:<class> | voc:<path>:<class>"
# Which task modules a teacher gets: only sources with masks can train a segmentation head.
TASKS_BY_KIND = {
    "digits": (CLASSIFICATION,),
    "folder": (CLASSIFICATION,),
    "shapes": (CLASSIFICATION, SEGMENTATION),
    "voc": (CLASSIFICATION, SEGMENTATION),
}


@dataclass(frozen=True)
class Source:
    kind: str
    category: str
    path: str | None = None  # folder and voc only

    @property
    def tasks(self) -> tuple[str, ...]:
        return TASKS_BY_KIND[self.kind]


def parse_source(text: str) -> Source:
    """Split a source string; paths may hold ':' themselves, so the class is the last field."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS or not rest:
        raise SiteAgentError(f"bad data source {text!r}: expected {SOURCE_HELP}")
    if kind in ("digits", "shapes"):
        return Source(kind, rest)
    path, sep, category = rest.rpartition(":")
    if not sep or not path or not category:
        raise SiteAgentError(f"bad data source {text!r}: expected {kind}:<path>:<class>")
    return Source(kind, category, path)


# Options that only some sources read: any other source refuses them rather than ignoring them.
OPTION_KINDS = {"n_train": ("shapes",), "n_test": ("shapes",), "negatives": ("shapes", "folder", "voc")}
NEGATIVES_HELP = ("shapes: the paper's 'category vs random images' (the dissimilar categories and plain "
                  "backgrounds) unless --negatives names others ('background' included); folder: every other "
                  "class folder unless --negatives names some (e.g. a folder of random images); digits: every "
                  "other digit; voc: every listed image without the class unless --negatives names VOC classes "
                  "(then only the images showing one of them)")


def check_options(text: str, **given: object) -> None:
    """Refuse options that the source would not read (None means: not given)."""
    kind = parse_source(text).kind
    for name, value in given.items():
        if value is not None and kind not in OPTION_KINDS[name]:
            flag = "--" + name.replace("_", "-")
            raise SiteAgentError(f"{flag} does not apply to {kind}: sources (only {', '.join(OPTION_KINDS[name])})")


def load_source(text: str, size: int | tuple[int, int] = 32, seed: int = 0, n_train: int | None = None,
                n_test: int | None = None, negatives: tuple[str, ...] | None = None) -> CategoryDataset:
    """The CategoryDataset behind a source string; data-layer errors become SiteAgentError. `size`: a side,
    or (H, W) for the image sources (folder, voc); generated sources are square."""
    src = parse_source(text)
    check_options(text, n_train=n_train, n_test=n_test, negatives=negatives)
    if not isinstance(size, int):
        if src.kind in ("digits", "shapes") and size[0] != size[1]:
            raise SiteAgentError(f"{src.kind}: sources are square; got an input of {size[0]}x{size[1]}")
        size = size[0] if src.kind in ("digits", "shapes") else (int(size[0]), int(size[1]))
    try:
        if src.kind == "digits":
            assert isinstance(size, int)
            return load_digits_category(src.category, seed=seed, size=size)
        if src.kind == "shapes":
            assert isinstance(size, int)
            return load_shapes_category(src.category, n_train=n_train or 1000, n_test=n_test or 400, seed=seed,
                                        size=size, negatives=negatives)
        assert src.path is not None  # parse_source gives folder and voc sources a path
        if src.kind == "folder":
            return load_image_folder(src.path, src.category, size=size, seed=seed, negatives=negatives)
        return load_voc_folder(src.path, src.category, size=size, seed=seed, negatives=negatives)
    except (ValueError, OSError) as exc:
        raise SiteAgentError(f"cannot load data source {text!r}: {exc}") from None


def source_tasks(text: str) -> tuple[str, ...]:
    return parse_source(text).tasks
