"""The registry of dataset layouts: one name per published layout, one entry point to read each.

``load_places`` gives the training (or labelled) places of a split; ``load_eval_split`` gives a test split with its
fixed query and gallery roles (:class:`~geobridge.data.evalsplit.EvalSplit`). docs/data-format.md describes every
layout and how it maps onto places and items.
"""

from __future__ import annotations

from pathlib import Path

from geobridge.data.evalsplit import EvalSplit
from geobridge.data.types import Place
from geobridge.errors import DataError

FORMATS: tuple[str, ...] = ("geoloc", "university1652", "geotext1652", "cvusa", "cvact", "vigor")
# the retrieval directions each benchmark defines for its test split
DIRECTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "university1652": (("drone", "satellite"), ("satellite", "drone"), ("street", "satellite"),
                       ("satellite", "street"), ("drone", "street"), ("street", "drone")),
    "geotext1652": (("text", "drone"), ("drone", "text"), ("text", "satellite"), ("text", "street")),
    "cvusa": (("street", "satellite"), ("satellite", "street")),
    "cvact": (("street", "satellite"), ("satellite", "street")),
    "vigor": (("street", "satellite"),),
}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def load_places(root: str | Path, *, fmt: str = "geoloc", split: str | None = None, role: str | None = None,
                mode: str = "same", include_google: bool = False) -> list[Place]:
    """The places of one split of a dataset in layout ``fmt``.

    ``role`` (University-1652 test only): ``query`` or ``gallery``; the test split has no merged pool.
    ``mode`` (VIGOR): ``same`` (same-area) or ``cross`` (cross-area). ``include_google`` (University-1652 train):
    add the ``google`` folder's photos to each building's street images.
    """
    check_format(fmt)
    if fmt == "geoloc":
        from geobridge.data.geoloc import GeoLocDataset

        return GeoLocDataset(root, split=split).places
    if fmt == "university1652":
        from geobridge.data.university1652 import University1652Dataset

        dataset = University1652Dataset(root, split=split or "train", include_google=include_google)
        if dataset.split == "test":
            if role is None:
                raise DataError(
                    f"{Path(root) / 'test'}: the University-1652 test split has fixed roles; pass role='query' or "
                    "role='gallery' (or use load_eval_split for a protocol's query and gallery items)"
                )
            return dataset.places_for(role)
        return dataset.places
    if fmt == "geotext1652":
        from geobridge.data.geotext1652 import GeoText1652Dataset

        return GeoText1652Dataset(root, split=split or "train").places
    if fmt == "cvusa":
        from geobridge.data.cvusa import CVUSADataset

        return CVUSADataset(root, split=split or "train").places
    if fmt == "cvact":
        from geobridge.data.cvact import CVACTDataset

        return CVACTDataset(root, split=split or "train").places
    from geobridge.data.vigor import VIGORDataset

    return VIGORDataset(root, mode=mode, split=split or "train").places


def load_eval_split(root: str | Path, *, fmt: str, query_view: str, gallery_view: str, split: str = "test",
                    mode: str = "same", extra_gallery: str | Path | None = None) -> EvalSplit:
    """The test split of a benchmark for one direction, e.g. University-1652 drone -> satellite.

    ``split``: CVACT ``val`` (CVACT_val) or ``test`` (CVACT_test); the other layouts have one test split.
    ``mode``: VIGOR ``same`` or ``cross``. ``extra_gallery``: University-1652 extra distractor images (160k).
    """
    check_format(fmt)
    if fmt == "geoloc":
        raise ValueError("the GeoLoc layout has no fixed query/gallery roles; use geobridge.eval on its places")
    allowed = DIRECTIONS[fmt]
    if (query_view, gallery_view) not in allowed:
        names = ", ".join(f"{q}->{g}" for q, g in allowed)
        raise ValueError(f"{fmt} has no direction {query_view}->{gallery_view}; expected one of {names}")
    if fmt == "university1652":
        from geobridge.data.university1652 import University1652Dataset

        return University1652Dataset(root, split="test").eval_split(query_view, gallery_view,
                                                                    extra_gallery=extra_gallery)
    if fmt == "geotext1652":
        from geobridge.data.geotext1652 import GeoText1652Dataset

        return GeoText1652Dataset(root, split="test").eval_split(query_view, gallery_view)
    if fmt == "cvusa":
        from geobridge.data.cvusa import CVUSADataset

        return CVUSADataset(root, split="test").eval_split(query_view, gallery_view)
    if fmt == "cvact":
        from geobridge.data.cvact import CVACTDataset

        return CVACTDataset(root, split=split if split in ("val", "test") else "test").eval_split(query_view,
                                                                                                  gallery_view)
    from geobridge.data.vigor import VIGORDataset

    return VIGORDataset(root, mode=mode, split="test").eval_split(query_view, gallery_view)
