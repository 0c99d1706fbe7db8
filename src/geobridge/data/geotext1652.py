"""GeoText-1652 text annotations for University-1652 images.

Assumed schema (the GeoText-1652 release as we understand it; the file could not be checked here):
a JSON list of objects, one per image, each with

* ``image``: the image path relative to the University-1652 root, e.g. ``train/drone/0839/image-43.jpeg``;
  the building id is the name of the image's parent folder;
* ``caption``: a string (the full description), and optionally
* ``sentences``: a list of region-level sentences (used when ``caption`` is absent).

Other keys (``image_id``, ``bboxes``, ...) are ignored. Anything else is a DataError naming the file and entry.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from geobridge.data.io import read_json
from geobridge.errors import DataError


def load_geotext1652(json_path, *, views: tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """Building id -> captions (deduplicated, in file order); ``views`` keeps images of those view folders."""
    from pathlib import Path

    path = Path(json_path)
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {{'image': ..., 'caption': ...}} entries")
    out: dict[str, list[str]] = {}
    for number, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise DataError(f"{path}: entry {number} has no 'image' path")
        image = PurePosixPath(entry["image"].replace("\\", "/"))
        if len(image.parts) < 2:
            raise DataError(f"{path}: entry {number}: image path {entry['image']!r} has no building folder")
        view_folder = image.parts[-3] if len(image.parts) >= 3 else ""
        if views is not None and not any(view_folder.endswith(v) for v in views):
            continue
        caption = entry.get("caption")
        texts = [caption] if isinstance(caption, str) else list(entry.get("sentences") or [])
        if not texts or not all(isinstance(t, str) for t in texts):
            raise DataError(f"{path}: entry {number} ({entry['image']}) has no 'caption' string or 'sentences' list")
        bucket = out.setdefault(image.parts[-2], [])
        for text in texts:
            text = text.strip()
            if text and text not in bucket:
                bucket.append(text)
    return out
