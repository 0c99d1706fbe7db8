"""GeoText-1652 (MultimodalGeo/GeoText-1652): text for University-1652 images, read from the published JSON.

Published files (README and ``Method/dataset/re_bbox_dataset.py`` of the release)::

    train.json               [{"image_id": "0839/image-43.jpeg", "image": "train/0839/image-43.jpeg",
                               "caption": "<global description>", "sentences": ["<region sentence>", ...],
                               "bboxes": [[cx, cy, w, h] | null, ...]}, ...]
    test_951_version.json    [{"image_id": ..., "image": ..., "caption": ["<description>", ...], ...}, ...]
    test_24G_version.json    (a fifth of the test set, same schema)
    train/<building>/<image>, test/query(701)/<building>/<image>, test/gallery_no_train(250)/<building>/<image>

Image paths hold no view folder; the building is the first four characters of ``image_id`` (the parent folder of
``image``) and the view follows University-1652's file names: ``image-NN.*`` is a drone photo, ``<building>.*``
the satellite tile, anything else a street photo (a path that does name a view folder wins). ``caption`` is a string
in train and a list in test: both become a tuple of captions. ``sentences`` and ``bboxes`` (normalised
``[cx, cy, w, h]``; ``null`` = no box) are kept as grounding pairs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from geobridge.data.evalsplit import EvalItem, EvalSplit
from geobridge.data.io import read_json
from geobridge.data.types import Place
from geobridge.errors import DataError
from geobridge.views import IMAGE_VIEWS, check_view

TRAIN_JSON = "train.json"
TEST_JSONS = ("test_951_version.json", "test_24G_version.json")
_DRONE_NAME = re.compile(r"^image-\d+$")
_VIEW_FOLDERS = {f"{prefix}{view}": view for view in IMAGE_VIEWS for prefix in ("", "query_", "gallery_")}


@dataclass(frozen=True)
class Grounding:
    """One region of an image: its sentence and its box (normalised ``(cx, cy, w, h)``, ``None`` = no box)."""

    sentence: str | None
    bbox: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class GeoTextEntry:
    """One annotated image of GeoText-1652."""

    image_id: str
    image: str  # as written in the JSON, relative to the image root
    building: str
    view: str
    captions: tuple[str, ...]
    grounding: tuple[Grounding, ...] = ()
    path: Path | None = None  # the image file, when it was found under the dataset root


def image_view(image: str, building: str) -> str:
    """The University-1652 view of an image path: its view folder if it names one, else its file name."""
    parts = PurePosixPath(image.replace("\\", "/")).parts
    for part in parts[:-1]:
        if part in _VIEW_FOLDERS:
            return _VIEW_FOLDERS[part]
    stem = PurePosixPath(parts[-1]).stem if parts else ""
    if _DRONE_NAME.match(stem):
        return "drone"
    if stem == building:
        return "satellite"
    return "street"


def read_geotext_json(json_path: str | Path, *, root: str | Path | None = None) -> list[GeoTextEntry]:
    """Every entry of a GeoText-1652 JSON file; a bad entry is a DataError naming the file and its index.

    ``root``: where image paths are resolved (default: the JSON file's folder); ``path`` is set when the file exists
    at ``root/image``, ``root/images/image``, ``root/test/image`` or ``root/images/test/image``.
    """
    path = Path(json_path)
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {{'image_id', 'image', 'caption'}} entries")
    base = Path(root) if root is not None else path.parent
    return [_entry(raw, number, path, base) for number, raw in enumerate(data)]


def _entry(raw: Any, number: int, path: Path, base: Path) -> GeoTextEntry:
    where = f"{path}: entry {number}"
    if not isinstance(raw, dict) or not isinstance(raw.get("image"), str) or not raw["image"].strip():
        raise DataError(f"{where} has no 'image' path")
    image = raw["image"].replace("\\", "/")
    image_id = raw.get("image_id")
    if not isinstance(image_id, str) or not image_id:
        parts = PurePosixPath(image).parts
        if len(parts) < 2:
            raise DataError(f"{where}: no 'image_id' and the image path {image!r} has no building folder")
        image_id = "/".join(parts[-2:])
    building = PurePosixPath(image_id).parts[0] if "/" in image_id else image_id[:4]
    caption = raw.get("caption")
    if isinstance(caption, str):
        captions = (caption.strip(),)
    elif isinstance(caption, list) and all(isinstance(c, str) for c in caption):
        captions = tuple(c.strip() for c in caption)
    else:
        raise DataError(f"{where} ({image}): 'caption' must be a string or a list of strings, got "
                        f"{type(caption).__name__}")
    captions = tuple(c for c in captions if c)
    if not captions:
        raise DataError(f"{where} ({image}): empty caption")
    grounding = _grounding(raw, where)
    candidates = (base / image, base / "images" / image, base / "test" / image, base / "images" / "test" / image)
    found = next((p for p in candidates if p.is_file()), None)
    return GeoTextEntry(image_id=image_id, image=image, building=building, view=image_view(image, building),
                        captions=captions, grounding=grounding, path=found)


def _grounding(raw: dict[str, Any], where: str) -> tuple[Grounding, ...]:
    sentences = raw.get("sentences") or []
    bboxes = raw.get("bboxes") or []
    if not isinstance(sentences, list) or not isinstance(bboxes, list):
        raise DataError(f"{where}: 'sentences' and 'bboxes' must be lists")
    out = []
    for k in range(max(len(sentences), len(bboxes))):
        sentence = sentences[k] if k < len(sentences) else None
        box = bboxes[k] if k < len(bboxes) else None
        if sentence is not None and not isinstance(sentence, str):
            raise DataError(f"{where}: sentences[{k}] is not a string")
        if box is not None:
            if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)):
                raise DataError(f"{where}: bboxes[{k}] must be [cx, cy, w, h] or null, got {box!r}")
            box = tuple(float(v) for v in box)
        out.append(Grounding(sentence=sentence, bbox=box))
    return tuple(out)


class GeoText1652Dataset:
    """A GeoText-1652 folder: ``train.json`` and/or a test JSON beside the images.

    ``split="train"`` gives per-building :class:`Place` records with captions as texts (``places``); ``split="test"``
    gives text->image and image->text :meth:`eval_split` s. ``test_json`` picks the test file (default: the first of
    ``test_951_version.json``, ``test_24G_version.json`` present).
    """

    def __init__(self, root: str | Path, *, split: str = "train", test_json: str | None = None) -> None:
        self.root = Path(root)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if split == "train":
            json_path = self.root / TRAIN_JSON
        elif test_json is not None:
            json_path = self.root / test_json
        else:
            present = [self.root / n for n in TEST_JSONS if (self.root / n).is_file()]
            json_path = present[0] if present else self.root / TEST_JSONS[0]
        if not json_path.is_file():
            raise DataError(f"not a GeoText-1652 folder: {json_path} is missing")
        self.split = split
        self.json_path = json_path
        self.entries = read_geotext_json(json_path, root=self.root)

    def missing_images(self) -> list[GeoTextEntry]:
        return [e for e in self.entries if e.path is None]

    @property
    def places(self) -> list[Place]:
        """One place per building: its images per view and every caption of its images (in file order)."""
        images: dict[str, dict[str, list[Path]]] = {}
        texts: dict[str, list[str]] = {}
        for entry in self.entries:
            if entry.path is not None:  # train.json repeats an image once per caption
                paths = images.setdefault(entry.building, {}).setdefault(entry.view, [])
                if entry.path not in paths:
                    paths.append(entry.path)
            bucket = texts.setdefault(entry.building, [])
            bucket.extend(c for c in entry.captions if c not in bucket)
        return [
            Place(place_id=b, lat=None, lon=None, split=self.split, texts=tuple(texts[b]),
                  images={v: tuple(p) for v, p in images.get(b, {}).items()})
            for b in sorted(texts)
        ]

    def captions_by_building(self) -> dict[str, list[str]]:
        return {p.place_id: list(p.texts) for p in self.places}

    def eval_split(self, query_view: str = "text", gallery_view: str = "drone") -> EvalSplit:
        """Text -> image (``query_view="text"``) or image -> text retrieval over the entries of one image view.

        A text item's ``target`` is the key of the image it was written for (GeoText's ``txt2img``), its ``group``
        the same key; an image item's key is its JSON ``image`` path. ``place_id`` is the building throughout.
        """
        check_view(query_view)
        check_view(gallery_view)
        if "text" not in (query_view, gallery_view) or query_view == gallery_view:
            raise ValueError(f"GeoText-1652 retrieves text<->image; got {query_view}->{gallery_view}")
        view = gallery_view if query_view == "text" else query_view
        merged: dict[str, GeoTextEntry] = {}  # an image listed in several entries is one item with all captions
        for e in self.entries:
            if e.view != view:
                continue
            old = merged.get(e.image)
            captions = e.captions if old is None else old.captions + tuple(c for c in e.captions
                                                                           if c not in old.captions)
            merged[e.image] = GeoTextEntry(image_id=e.image_id, image=e.image, building=e.building, view=e.view,
                                           captions=captions, grounding=e.grounding, path=e.path)
        entries = list(merged.values())
        missing = [e.image for e in entries if e.path is None]
        if missing:
            raise DataError(f"{self.json_path}: {len(missing)} {view} images not found under {self.root}, "
                            f"e.g. {missing[0]}")
        images = [EvalItem(key=e.image, view=view, place_id=e.building, path=e.path) for e in entries]
        texts = [
            EvalItem(key=f"{e.image}#{k}", view="text", place_id=e.building, text=caption, group=e.image,
                     target=e.image if query_view == "text" else None)
            for e in entries for k, caption in enumerate(e.captions)
        ]
        queries, gallery = (texts, images) if query_view == "text" else (images, texts)
        return EvalSplit(name=f"geotext1652 {query_view}->{gallery_view}", queries=tuple(queries),
                         gallery=tuple(gallery), source=self.json_path)


def load_geotext1652(json_path: str | Path, *, views: tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """Building id -> captions (deduplicated, in file order); ``views`` keeps the images of those views."""
    out: dict[str, list[str]] = {}
    for entry in read_geotext_json(json_path):
        if views is not None and entry.view not in views:
            continue
        bucket = out.setdefault(entry.building, [])
        bucket.extend(c for c in entry.captions if c not in bucket)
    return out
