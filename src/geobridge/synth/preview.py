"""A contact sheet of a synthetic (or any GeoLoc / University-1652) world, to check it by eye.

Rows are places; columns are the satellite tile, two drone headings (the first and the opposite one) and the
street panorama; the place's first text description is printed under its row.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from geobridge._atomic import atomic_path
from geobridge.errors import DataError
from geobridge.images import load_image

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _place_folders(root: Path) -> tuple[list[str], dict[str, dict[str, Path]]]:
    """Place ids in file order, and for each the folder of each image view."""
    if (root / "places.jsonl").is_file():
        ids = [str(r["place_id"]) for r in _read_jsonl(root / "places.jsonl")]
        return ids, {pid: {v: root / v / pid for v in ("drone", "satellite", "street")} for pid in ids}
    if (root / "train").is_dir() or (root / "test").is_dir():
        folders: dict[str, dict[str, Path]] = {}
        ids: list[str] = []
        for view in ("satellite", "drone", "street"):
            for parent in (root / "train" / view, root / "test" / f"query_{view}", root / "test" / f"gallery_{view}"):
                if not parent.is_dir():
                    continue
                for folder in sorted(p for p in parent.iterdir() if p.is_dir()):
                    entry = folders.setdefault(folder.name, {})
                    if folder.name not in ids:
                        ids.append(folder.name)
                    entry.setdefault(view, folder)
        return ids, folders
    raise DataError(f"{root} holds neither places.jsonl (GeoLoc layout) nor train/ or test/ (University-1652 layout)")


def write_preview(root: str | os.PathLike[str], out_png: str | os.PathLike[str], *, places: int = 6,
                  tile: int = 128) -> Path:
    """Write a contact sheet of the first ``places`` places of the dataset at ``root`` to ``out_png``."""
    root = Path(root)
    ids, folders = _place_folders(root)
    if not ids:
        raise DataError(f"{root} holds no places to preview")
    texts = {str(r["place_id"]): list(r.get("texts", [])) for r in _read_jsonl(root / "texts.jsonl")}
    ids = ids[: max(1, places)]
    font = ImageFont.load_default()
    gap = 4
    width = 5 * tile + 4 * gap  # satellite, drone, drone, street (2 tiles wide)
    chars = max(20, width // 6)
    header = 16
    blocks = []
    for pid in ids:
        text = (texts.get(pid) or [""])[0]
        lines = textwrap.wrap(f"{pid}: {text}", chars) or [pid]
        blocks.append((pid, lines))
    line_h = 12
    height = header + sum(tile + gap + line_h * len(lines) + 2 * gap for _, lines in blocks)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for x, label in ((0, "satellite"), (tile + gap, "drone"), (2 * (tile + gap), "drone (opposite)"),
                     (3 * (tile + gap), "street panorama (north at the left edge)")):
        draw.text((x + 2, 2), label, fill=(0, 0, 0), font=font)
    y = header
    for pid, lines in blocks:
        views = folders.get(pid, {})
        drones = _images_in(views.get("drone", Path("/nonexistent")))
        sats = _images_in(views.get("satellite", Path("/nonexistent")))
        streets = _images_in(views.get("street", Path("/nonexistent")))
        cells = [
            (sats[0] if sats else None, (tile, tile)),
            (drones[0] if drones else None, (tile, tile)),
            (drones[len(drones) // 2] if len(drones) > 1 else None, (tile, tile)),
            (streets[0] if streets else None, (2 * tile, tile)),
        ]
        x = 0
        for path, size in cells:
            if path is not None:
                sheet.paste(load_image(path).resize(size, Image.Resampling.BILINEAR), (x, y))
            else:
                draw.rectangle([x, y, x + size[0] - 1, y + size[1] - 1], fill=(220, 220, 220))
            x += size[0] + gap
        ty = y + tile + gap
        for line in lines:
            draw.text((2, ty), line, fill=(20, 20, 20), font=font)
            ty += line_h
        y = ty + 2 * gap
    out = Path(out_png)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
