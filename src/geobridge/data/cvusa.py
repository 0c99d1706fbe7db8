"""CVUSA (the subset of Zhai et al. used since CVM-Net): street panoramas paired one-to-one with satellite tiles.

Layout read here (the split files that SAFA, Sample4Geo and others read)::

    <root>/splits/train-19zl.csv     one pair per line: <satellite path>,<street path>,<annotation path>
    <root>/splits/val-19zl.csv       the test split (8,884 pairs), same columns
    <root>/bingmap/19/0000001.jpg    satellite tiles (paths as listed, relative to <root>)
    <root>/streetview/panos/0000001.jpg

Every pair is its own place (``place_id`` = the satellite file's stem); CVUSA's split files carry no coordinates.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from geobridge.data.evalsplit import EvalItem, EvalSplit
from geobridge.data.io import read_lines
from geobridge.data.types import Place
from geobridge.errors import DataError

SPLIT_FILES = {"train": "splits/train-19zl.csv", "test": "splits/val-19zl.csv"}
DIRECTIONS = (("street", "satellite"), ("satellite", "street"))


def read_pairs(csv_path: Path) -> list[tuple[str, str]]:
    """(satellite path, street path) of each line of a CVUSA split file; a bad line names its number."""
    if not csv_path.is_file():
        raise DataError(f"missing CVUSA split file: {csv_path}")
    pairs = []
    for number, line in read_lines(csv_path):  # strict UTF-8, blank lines skipped; one CSV row per line
        row = next(csv.reader([line]))
        if not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{csv_path}:{number}: expected '<satellite path>,<street path>[,<annotation>]'")
        pairs.append((row[0].strip(), row[1].strip()))
    if not pairs:
        raise DataError(f"{csv_path}: no pairs")
    return pairs


class CVUSADataset:
    """One split of CVUSA: ``places`` (one per pair) and the street<->satellite :meth:`eval_split`."""

    def __init__(self, root: str | Path, *, split: str = "train") -> None:
        self.root = Path(root)
        if split not in SPLIT_FILES:
            raise ValueError(f"split must be one of {tuple(SPLIT_FILES)}, got {split!r}")
        self.split = split
        self.split_file = self.root / SPLIT_FILES[split]
        self.pairs = read_pairs(self.split_file)
        seen: dict[str, int] = {}
        for number, (sat, _) in enumerate(self.pairs, start=1):
            pid = PurePosixPath(sat).stem
            if pid in seen:
                raise DataError(f"{self.split_file}:{number}: satellite {sat!r} repeats line {seen[pid]}")
            seen[pid] = number

    def missing_images(self) -> list[Path]:
        return [self.root / p for pair in self.pairs for p in pair if not (self.root / p).is_file()]

    @property
    def places(self) -> list[Place]:
        return [
            Place(place_id=PurePosixPath(sat).stem, lat=None, lon=None, split=self.split,
                  images={"satellite": (self.root / sat,), "street": (self.root / street,)})
            for sat, street in self.pairs
        ]

    def eval_split(self, query_view: str = "street", gallery_view: str = "satellite") -> EvalSplit:
        return pair_split("cvusa", self.places, query_view, gallery_view, source=self.split_file)


def pair_split(name: str, places: list[Place], query_view: str, gallery_view: str, *, source: Path) -> EvalSplit:
    """One-to-one street<->satellite retrieval: each place's image of one view against all of the other view."""
    if (query_view, gallery_view) not in DIRECTIONS:
        raise ValueError(f"{name} retrieves street<->satellite; got {query_view}->{gallery_view}")

    def items(view: str) -> tuple[EvalItem, ...]:
        return tuple(EvalItem(key=f"{view}/{p.place_id}", view=view, place_id=p.place_id, path=p.images[view][0],
                              lat=p.lat, lon=p.lon) for p in places)

    return EvalSplit(name=f"{name} {query_view}->{gallery_view}", queries=items(query_view),
                     gallery=items(gallery_view), source=source)
