"""CVACT (Liu & Li, CVPR 2019): Canberra street panoramas and satellite tiles, split by ``ACT_data.mat``.

Layout read here (as SAFA's and Sample4Geo's readers expect it)::

    <root>/ACT_data.mat                  panoIds (N ids), utm (N x 2: easting, northing; UTM zone 55 south),
                                         trainSet.trainInd, valSet.valInd, valSetAll.valInd (1-based row indices)
    <root>/ANU_data_small/streetview/<id>_grdView.jpg
    <root>/ANU_data_small/satview_polish/<id>_satView_polish.jpg
    <root>/ANU_data_test/{streetview,satview_polish}/...    CVACT_test (valSetAll), when downloaded

Splits: ``train`` = trainSet, ``val`` = valSet (CVACT_val, 8,884 pairs), ``test`` = valSetAll (CVACT_test,
92,802 pairs, images under ``ANU_data_test``). When ``ANU_data_small/`` is absent, ``streetview/`` and
``satview_polish/`` directly under the root are used. As in the published readers, pairs whose images are missing
are left out (``missing`` lists them). Coordinates: lat/lon from ``utm`` (zone 55 south); ``utm`` keeps the metres.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from geobridge.data.cvusa import pair_split
from geobridge.data.evalsplit import EvalSplit
from geobridge.data.types import Place
from geobridge.errors import DataError

MAT_FILE = "ACT_data.mat"
SPLITS = {"train": ("trainSet", "trainInd"), "val": ("valSet", "valInd"), "test": ("valSetAll", "valInd")}
UTM_ZONE = 55  # Canberra; CVACT's utm has no zone, the release is all in zone 55 south
STREET_SUFFIX = "_grdView.jpg"
SATELLITE_SUFFIX = "_satView_polish.jpg"


def read_act_mat(path: Path) -> dict[str, Any]:
    """``panoIds`` (list[str]), ``utm`` ((N, 2) float array or None) and the 0-based indices of each split present."""
    if not path.is_file():
        raise DataError(f"missing CVACT file: {path}")
    try:
        import scipy.io
    except ImportError as exc:  # pragma: no cover - scipy is a declared dependency
        raise DataError(f"reading {path} needs scipy (pip install scipy)") from exc
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... for a damaged file
        raise DataError(f"unreadable .mat file {path}: {exc}") from exc
    if "panoIds" not in mat:
        raise DataError(f"{path}: no 'panoIds' variable (found {sorted(k for k in mat if not k.startswith('__'))})")
    ids = [_string(x) for x in np.asarray(mat["panoIds"], dtype=object).ravel()]
    utm = None
    if "utm" in mat:
        utm = np.asarray(mat["utm"], dtype=np.float64)
        if utm.ndim != 2 or utm.shape != (len(ids), 2):
            raise DataError(f"{path}: 'utm' has shape {utm.shape}, expected ({len(ids)}, 2)")
    out: dict[str, Any] = {"panoIds": ids, "utm": utm}
    for split, (struct, field) in SPLITS.items():
        if struct not in mat:
            continue
        try:
            raw = mat[struct][field][0][0]
        except (ValueError, IndexError, KeyError) as exc:
            raise DataError(f"{path}: '{struct}' has no field '{field}'") from exc
        index = np.asarray(raw, dtype=np.int64).ravel() - 1
        if index.size and (index.min() < 0 or index.max() >= len(ids)):
            raise DataError(f"{path}: {struct}.{field} holds indices outside 1..{len(ids)}")
        out[split] = index
    return out


def _string(value: Any) -> str:
    while isinstance(value, np.ndarray):
        if value.size == 0:
            return ""
        value = value.ravel()[0]
    return str(value).strip()


def utm_to_latlon(easting: float, northing: float, *, zone: int = UTM_ZONE, south: bool = True) -> tuple[float, float]:
    """WGS84 (lat, lon) in degrees of a UTM position (inverse transverse Mercator, Snyder's series; < 1 m error)."""
    a, f, k0 = 6378137.0, 1 / 298.257223563, 0.9996
    e2 = f * (2 - f)
    ep2 = e2 / (1 - e2)
    x = easting - 500000.0
    y = northing - (10000000.0 if south else 0.0)
    m = y / k0
    mu = m / (a * (1 - e2 / 4 - 3 * e2**2 / 64 - 5 * e2**3 / 256))
    e1 = (1 - math.sqrt(1 - e2)) / (1 + math.sqrt(1 - e2))
    phi1 = (mu + (3 * e1 / 2 - 27 * e1**3 / 32) * math.sin(2 * mu) + (21 * e1**2 / 16 - 55 * e1**4 / 32)
            * math.sin(4 * mu) + (151 * e1**3 / 96) * math.sin(6 * mu) + (1097 * e1**4 / 512) * math.sin(8 * mu))
    sin1, cos1, tan1 = math.sin(phi1), math.cos(phi1), math.tan(phi1)
    n1 = a / math.sqrt(1 - e2 * sin1**2)
    t1, c1 = tan1**2, ep2 * cos1**2
    r1 = a * (1 - e2) / (1 - e2 * sin1**2) ** 1.5
    d = x / (n1 * k0)
    lat = phi1 - (n1 * tan1 / r1) * (d**2 / 2 - (5 + 3 * t1 + 10 * c1 - 4 * c1**2 - 9 * ep2) * d**4 / 24
                                     + (61 + 90 * t1 + 298 * c1 + 45 * t1**2 - 252 * ep2 - 3 * c1**2) * d**6 / 720)
    lon = (d - (1 + 2 * t1 + c1) * d**3 / 6 + (5 - 2 * c1 + 28 * t1 - 3 * c1**2 + 8 * ep2 + 24 * t1**2) * d**5 / 120)
    lon = lon / cos1 + math.radians((zone - 1) * 6 - 180 + 3)
    return math.degrees(lat), math.degrees(lon)


def image_folder(root: Path, split: str) -> Path:
    """Where the images of ``split`` lie: ANU_data_test for test, ANU_data_small otherwise, else the root."""
    for name in (("ANU_data_test",) if split == "test" else ()) + ("ANU_data_small",):
        if (root / name).is_dir():
            return root / name
    return root


class CVACTDataset:
    """One split of CVACT: ``places`` (one per panorama) and the street<->satellite :meth:`eval_split`."""

    def __init__(self, root: str | Path, *, split: str = "train") -> None:
        self.root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        self.split = split
        self.mat_path = self.root / MAT_FILE
        mat = read_act_mat(self.mat_path)
        if split not in mat:
            struct, field = SPLITS[split]
            raise DataError(f"{self.mat_path}: no '{struct}.{field}' for the {split} split")
        self.images = image_folder(self.root, split)
        ids, utm = mat["panoIds"], mat["utm"]
        self.utm: dict[str, tuple[float, float]] = {}
        self.missing: list[Path] = []
        self._places: list[Place] = []
        for row in mat[split]:
            pid = ids[int(row)]
            street = self.images / "streetview" / f"{pid}{STREET_SUFFIX}"
            sat = self.images / "satview_polish" / f"{pid}{SATELLITE_SUFFIX}"
            absent = [p for p in (street, sat) if not p.is_file()]
            if absent:
                self.missing.extend(absent)
                continue
            lat = lon = None
            if utm is not None:
                self.utm[pid] = (float(utm[row, 0]), float(utm[row, 1]))
                lat, lon = utm_to_latlon(*self.utm[pid])
            self._places.append(Place(place_id=pid, lat=lat, lon=lon, split=split,
                                      images={"street": (street,), "satellite": (sat,)}))
        if not self._places:
            raise DataError(f"{self.images}: none of the {len(mat[split])} {split} pairs has both images "
                            f"(streetview/<id>{STREET_SUFFIX}, satview_polish/<id>{SATELLITE_SUFFIX})")

    @property
    def places(self) -> list[Place]:
        return self._places

    def eval_split(self, query_view: str = "street", gallery_view: str = "satellite") -> EvalSplit:
        return pair_split(f"cvact-{self.split}", self._places, query_view, gallery_view, source=self.mat_path)
