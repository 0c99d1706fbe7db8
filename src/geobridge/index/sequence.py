"""Flight sequences: one smoothed track from the frames of one flight, under a motion bound.

Each frame is located on its own (``locate``), giving its top-k candidate positions with their scores. The track
picks one candidate per frame by a Viterbi dynamic programme that maximises the summed score of the picked
candidates, where a move between consecutive frames longer than the motion bound is forbidden:

* with timestamps, the bound between frames ``t-1`` and ``t`` is ``max_speed_mps * (time_t - time_{t-1})``;
* without them, it is ``max_step_m`` for every step;
* ``slack_m`` is added to either (candidates are tile centres, off the true position by up to half a stride).

Where no candidate of a frame can be reached from any candidate of the previous frame within the bound, the
programme takes the best break (a forbidden move at a fixed, huge cost, so breaks are as few as possible) and
counts it in ``breaks``. ``window=W`` runs the programme over the sliding window of frames ``t-W .. t+W`` for
each frame ``t`` and keeps that frame's pick (consensus over a sliding window); ``window=None`` runs it once over
the whole sequence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from geobridge.data.io import read_lines
from geobridge.errors import DataError, GeoBridgeError
from geobridge.geodesy import haversine_km

BREAK_COST = 1e6  # a forbidden move: far above any summed similarity, so breaks are taken only when unavoidable
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")


@dataclass(frozen=True)
class SequenceFrame:
    """One frame of a flight: its image path, its time in seconds (or None) and its true position where known."""

    path: str
    timestamp: float | None = None
    truth: tuple[float, float] | None = None


@dataclass
class TrackResult:
    """The smoothed track: per frame the picked candidate (``lat``, ``lon``, ``score``, ``rank`` among that
    frame's candidates, 1 = its single-frame top-1) beside the single-frame estimate (``single_lat``,
    ``single_lon``); with truths, ``error_m`` and ``single_error_m`` per frame and their medians in ``summary``."""

    frames: list[dict[str, Any]]
    bound: dict[str, Any]
    breaks: int
    summary: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"frames": [dict(f) for f in self.frames], "bound": dict(self.bound), "breaks": self.breaks,
                "summary": dict(self.summary)}

    def to_geojson(self) -> dict[str, Any]:
        """A FeatureCollection: the track as a LineString (``kind: track``), then one point per frame (``kind:
        frame``, with its estimate's properties)."""
        line = {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[f["lon"], f["lat"]] for f in self.frames]},
            "properties": {"kind": "track", "frames": len(self.frames), "bound": dict(self.bound),
                           "breaks": self.breaks, "summary": dict(self.summary)},
        }
        points = [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [f["lon"], f["lat"]]},
             "properties": {"kind": "frame", **{k: v for k, v in f.items() if k not in ("lat", "lon")}}}
            for f in self.frames
        ]
        return {"type": "FeatureCollection", "features": [line, *points]}


# ---------------------------------------------------------------------------------------------------------------------
# the dynamic programme (pure)


def step_bounds(
    n_frames: int,
    *,
    timestamps: Sequence[float] | None = None,
    max_speed_mps: float | None = None,
    max_step_m: float | None = None,
    slack_m: float = 0.0,
) -> np.ndarray:
    """(n_frames - 1,) the longest allowed move in metres between each pair of consecutive frames."""
    if slack_m < 0:
        raise GeoBridgeError(f"slack_m must be >= 0, got {slack_m}")
    if timestamps is not None:
        if max_speed_mps is None or not max_speed_mps > 0:
            raise GeoBridgeError(f"frames with timestamps need max_speed_mps > 0 (m/s), got {max_speed_mps}")
        times = np.asarray(timestamps, dtype=np.float64)
        if times.shape != (n_frames,) or not np.isfinite(times).all():
            raise GeoBridgeError(f"need one finite timestamp per frame ({n_frames}), got {list(timestamps)}")
        dt = np.diff(times)
        if (dt <= 0).any():
            bad = int(np.argmax(dt <= 0)) + 1
            raise GeoBridgeError(f"timestamps must increase: frame {bad} ({times[bad]}) after {times[bad - 1]}")
        return max_speed_mps * dt + slack_m
    if max_step_m is None or not max_step_m > 0:
        raise GeoBridgeError(f"frames without timestamps need max_step_m > 0 (metres per frame), got {max_step_m}")
    return np.full(max(n_frames - 1, 0), float(max_step_m) + slack_m)


def viterbi_track(
    candidates: Sequence[Sequence[Mapping[str, Any]]],
    bounds: np.ndarray,
) -> tuple[list[int], int]:
    """Index of the picked candidate per frame and the number of breaks (see the module docstring).

    ``candidates[t]`` is frame t's candidates, each with ``lat``, ``lon`` and ``score``; ``bounds[t-1]`` the longest
    allowed move in metres into frame t. Ties go to the better-ranked (earlier) candidate."""
    if not candidates:
        raise GeoBridgeError("a sequence needs at least one frame")
    if len(bounds) != len(candidates) - 1:
        raise GeoBridgeError(f"need {len(candidates) - 1} step bounds for {len(candidates)} frames, got {len(bounds)}")
    for t, frame in enumerate(candidates):
        if not frame:
            raise GeoBridgeError(f"frame {t} has no candidates")
    coords = [np.array([[float(c["lat"]), float(c["lon"])] for c in frame]) for frame in candidates]  # (K_t, 2)
    scores = [np.array([float(c["score"]) for c in frame]) for frame in candidates]  # (K_t,)
    total = scores[0].copy()  # (K_0,) best path score ending at each candidate
    back: list[np.ndarray] = []
    for t in range(1, len(candidates)):
        prev, cur = coords[t - 1], coords[t]
        metres = 1000.0 * haversine_km(prev[:, None, 0], prev[:, None, 1], cur[None, :, 0], cur[None, :, 1])  # (Kp, K)
        step = total[:, None] - BREAK_COST * (metres > bounds[t - 1])  # (Kp, K)
        best_prev = np.argmax(step, axis=0)  # (K,) first maximum: the better-ranked predecessor on ties
        total = step[best_prev, np.arange(len(cur))] + scores[t]
        back.append(best_prev)
    path = [int(np.argmax(total))]
    for pointers in reversed(back):
        path.append(int(pointers[path[-1]]))
    path.reverse()
    breaks = 0
    for t in range(1, len(path)):
        a, b = coords[t - 1][path[t - 1]], coords[t][path[t]]
        breaks += int(1000.0 * float(haversine_km(a[0], a[1], b[0], b[1])) > bounds[t - 1])
    return path, breaks


def smooth_track(
    candidates: Sequence[Sequence[Mapping[str, Any]]],
    *,
    timestamps: Sequence[float] | None = None,
    max_speed_mps: float | None = None,
    max_step_m: float | None = None,
    slack_m: float = 0.0,
    window: int | None = None,
) -> tuple[list[int], int, np.ndarray]:
    """``(picked candidate per frame, breaks, step bounds)``: the whole-sequence programme, or with ``window=W``
    the pick of each frame t from the programme over frames ``t-W .. t+W``."""
    n = len(candidates)
    bounds = step_bounds(n, timestamps=timestamps, max_speed_mps=max_speed_mps, max_step_m=max_step_m,
                         slack_m=slack_m)
    if window is None:
        picks, breaks = viterbi_track(candidates, bounds)
        return picks, breaks, bounds
    if window < 1:
        raise GeoBridgeError(f"window must be >= 1 (frames on each side), got {window}")
    picks = []
    for t in range(n):
        lo, hi = max(0, t - window), min(n, t + window + 1)
        local, _ = viterbi_track(candidates[lo:hi], bounds[lo : hi - 1])
        picks.append(local[t - lo])
    breaks = 0
    for t in range(1, n):
        a, b = candidates[t - 1][picks[t - 1]], candidates[t][picks[t]]
        metres = 1000.0 * float(haversine_km(float(a["lat"]), float(a["lon"]), float(b["lat"]), float(b["lon"])))
        breaks += int(metres > bounds[t - 1])
    return picks, breaks, bounds


def build_track(
    candidates: Sequence[Sequence[Mapping[str, Any]]],
    frames: Sequence[SequenceFrame],
    *,
    max_speed_mps: float | None = None,
    max_step_m: float | None = None,
    slack_m: float = 0.0,
    window: int | None = None,
) -> TrackResult:
    """The ``TrackResult`` of ``frames`` given their candidates (timestamps are used when every frame has one)."""
    if len(candidates) != len(frames):
        raise GeoBridgeError(f"got candidates for {len(candidates)} frames but {len(frames)} frames")
    stamps = [f.timestamp for f in frames]
    if any(s is not None for s in stamps) and any(s is None for s in stamps):
        missing = next(f.path for f in frames if f.timestamp is None)
        raise GeoBridgeError(f"either every frame has a timestamp or none has; {missing} has none")
    timestamps = None if stamps and stamps[0] is None else [float(s) for s in stamps]  # type: ignore[arg-type]
    picks, breaks, bounds = smooth_track(candidates, timestamps=timestamps, max_speed_mps=max_speed_mps,
                                         max_step_m=max_step_m, slack_m=slack_m, window=window)
    out = []
    for t, (frame, pick) in enumerate(zip(frames, picks, strict=True)):
        chosen, single = candidates[t][pick], candidates[t][0]
        row: dict[str, Any] = {
            "frame": t, "path": frame.path, "timestamp": frame.timestamp,
            "lat": float(chosen["lat"]), "lon": float(chosen["lon"]), "score": float(chosen["score"]),
            "rank": pick + 1, "place_id": chosen.get("place_id"),
            "single_lat": float(single["lat"]), "single_lon": float(single["lon"]),
            "bound_m": float(bounds[t - 1]) if t else None,
        }
        if frame.truth is not None:
            lat, lon = frame.truth
            row["error_m"] = 1000.0 * float(haversine_km(lat, lon, row["lat"], row["lon"]))
            row["single_error_m"] = 1000.0 * float(haversine_km(lat, lon, row["single_lat"], row["single_lon"]))
        out.append(row)
    bound = {"max_speed_mps": max_speed_mps, "max_step_m": max_step_m, "slack_m": slack_m, "window": window,
             "timestamps": timestamps is not None}
    summary: dict[str, float] = {"frames": float(len(out)), "moved": float(sum(r["rank"] != 1 for r in out))}
    errors = [r["error_m"] for r in out if "error_m" in r]
    if errors:
        summary["median_error_m"] = float(np.median(errors))
        summary["single_median_error_m"] = float(np.median([r["single_error_m"] for r in out if "error_m" in r]))
    return TrackResult(frames=out, bound=bound, breaks=breaks, summary=summary)


# ---------------------------------------------------------------------------------------------------------------------
# reading frames and locating them with a model


def read_sequence(sources: Sequence[str | Path]) -> list[SequenceFrame]:
    """Frames from image paths (in the order given), one folder (its images, sorted by name) or one ``.jsonl``
    file with a ``{"path": ..., "timestamp": seconds or ISO-8601, "lat": ..., "lon": ...}`` object per line
    (``path`` relative to the file; ``timestamp`` and the true ``lat``/``lon`` optional)."""
    if not sources:
        raise GeoBridgeError("--sequence needs frames: image paths, a folder of images or a .jsonl file")
    paths = [Path(s) for s in sources]
    if len(paths) == 1 and paths[0].is_dir():
        images = sorted(p for p in paths[0].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"sequence folder {paths[0]} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return [SequenceFrame(path=str(p)) for p in images]
    if len(paths) == 1 and paths[0].suffix == ".jsonl":
        return _read_jsonl(paths[0])
    for p in paths:
        if not p.is_file():
            raise DataError(f"sequence frame not found: {p}")
    return [SequenceFrame(path=str(p)) for p in paths]


def _read_jsonl(path: Path) -> list[SequenceFrame]:
    if not path.is_file():
        raise DataError(f"sequence file not found: {path}")
    frames = []
    for number, line in read_lines(path):  # strict UTF-8, blank lines skipped, DataError naming path:line
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: not JSON ({error.msg})") from None
        except RecursionError:
            raise DataError(f"{where}: not JSON (nested too deeply)") from None
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise DataError(f"{where}: each line needs a 'path' string")
        image = Path(row["path"]) if Path(row["path"]).is_absolute() else path.parent / row["path"]
        if not image.is_file():
            raise DataError(f"{where}: frame not found: {image}")
        truth = None
        if ("lat" in row) != ("lon" in row):
            raise DataError(f"{where}: give both 'lat' and 'lon' (the true position) or neither")
        if "lat" in row:
            try:
                truth = (float(row["lat"]), float(row["lon"]))
            except (TypeError, ValueError):
                raise DataError(f"{where}: 'lat' and 'lon' must be numbers") from None
        frames.append(SequenceFrame(path=str(image), timestamp=_seconds(row.get("timestamp"), where=where),
                                    truth=truth))
    if not frames:
        raise DataError(f"sequence file {path} holds no frames")
    return frames


def _seconds(value: Any, *, where: str) -> float | None:
    """A timestamp in seconds: a number as it is, an ISO-8601 string as POSIX seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise DataError(f"{where}: 'timestamp' must be seconds or an ISO-8601 time, got {value!r}")


def locate_sequence(
    model: Any,
    index: Any,
    frames: Sequence[SequenceFrame],
    *,
    view: str = "drone",
    top_k: int = 10,
    max_speed_mps: float | None = None,
    max_step_m: float | None = None,
    slack_m: float = 0.0,
    window: int | None = None,
    prior: Any = None,
) -> TrackResult:
    """Locate every frame on its own (its ``top_k`` matches are its candidates, within ``prior``, a
    ``geobridge.index.locate.Prior``, if given) and smooth them into one track."""
    from geobridge.index.locate import locate

    if top_k < 1:
        raise GeoBridgeError(f"top_k must be >= 1, got {top_k}")
    candidates = []
    for frame in frames:
        result = locate(model, index, images=[(view, frame.path)], top_k=top_k, fusion="score",
                        prior=prior)
        candidates.append([{"lat": m.lat, "lon": m.lon, "score": m.score, "place_id": m.place_id}
                           for m in result.matches])
    return build_track(candidates, frames, max_speed_mps=max_speed_mps, max_step_m=max_step_m, slack_m=slack_m,
                       window=window)
