"""Flight sequences: the Viterbi track over per-frame candidates under a motion bound, timestamps, inputs, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from geobridge.cli.main import main
from geobridge.errors import DataError, GeoBridgeError
from geobridge.eval.geo import haversine_km
from geobridge.index.sequence import SequenceFrame, build_track, read_sequence, smooth_track, step_bounds

LAT0, LON0 = 50.0, 15.0
M_PER_DEG_LON = 1000.0 * float(haversine_km(LAT0, LON0, LAT0, LON0 + 1.0))


def at(east_m: float, score: float) -> dict:
    """A candidate ``east_m`` metres east of (LAT0, LON0) with a score."""
    return {"lat": LAT0, "lon": LON0 + east_m / M_PER_DEG_LON, "score": score, "place_id": f"x{east_m:g}"}


def flight_with_outliers() -> tuple[list[list[dict]], list[float]]:
    """7 frames flying east at 20 m per frame; at frames 2 and 5 the top-1 is a 500 m outlier and the true
    position is only the second candidate. Every other frame: the truth first, a decoy 300 m north-east second."""
    truth = [20.0 * t for t in range(7)]
    candidates = []
    for t, x in enumerate(truth):
        if t in (2, 5):
            candidates.append([at(x + 500.0, 0.9), at(x, 0.8), at(x - 400.0, 0.7)])
        else:
            candidates.append([at(x, 1.0), at(x + 300.0, 0.6)])
    return candidates, truth


def test_the_track_replaces_outliers_by_the_candidates_within_the_motion_bound():
    candidates, truth = flight_with_outliers()
    picks, breaks, bounds = smooth_track(candidates, max_step_m=30.0)
    # by hand: frames 2 and 5 can reach their neighbours only through the true (second) candidate, 20 m away
    assert picks == [0, 0, 1, 0, 0, 1, 0] and breaks == 0
    assert bounds.tolist() == [30.0] * 6
    frames = [SequenceFrame(path=f"f{t}.jpg", truth=(LAT0, LON0 + x / M_PER_DEG_LON)) for t, x in enumerate(truth)]
    track = build_track(candidates, frames, max_step_m=30.0)
    assert [f["rank"] for f in track.frames] == [1, 1, 2, 1, 1, 2, 1]
    assert max(f["error_m"] for f in track.frames) < 1e-6
    single = sorted(f["single_error_m"] for f in track.frames)
    assert single[-2:] == pytest.approx([500.0, 500.0], rel=1e-3) and single[0] < 1e-6
    assert track.summary["median_error_m"] < 1e-6 and track.summary["moved"] == 2.0
    # a sliding window of one frame each side reaches the same picks (each outlier's neighbours are clean)
    assert smooth_track(candidates, max_step_m=30.0, window=1)[0] == picks
    # a bound wider than the outliers' jump lets the higher-scoring outliers through: 0.9 + ... beats 0.8 + ...
    assert smooth_track(candidates, max_step_m=2000.0)[0] == [0] * 7


def test_geojson_is_a_linestring_through_the_picked_candidates():
    candidates, truth = flight_with_outliers()
    frames = [SequenceFrame(path=f"f{t}.jpg") for t in range(len(truth))]
    gj = build_track(candidates, frames, max_step_m=30.0).to_geojson()
    line, *points = gj["features"]
    assert line["geometry"]["type"] == "LineString" and line["properties"]["kind"] == "track"
    xs = [(lon - LON0) * M_PER_DEG_LON for lon, _ in line["geometry"]["coordinates"]]
    np.testing.assert_allclose(xs, truth, atol=1e-6)
    assert [p["properties"]["frame"] for p in points] == list(range(7))
    assert json.loads(json.dumps(gj)) == gj


def test_timestamps_scale_the_bound_with_the_time_between_frames():
    # frames 0-2 at 0, 20, 40 m; after a 28 s gap the drone is at 440 m, then 460 m. Frames 3 and 4 also offer a
    # weaker candidate that continues the slow line (60 m, 80 m).
    candidates = [[at(0, 0.9)], [at(20, 0.9)], [at(40, 0.9)], [at(440, 0.9), at(60, 0.5)], [at(460, 0.9), at(80, 0.5)]]
    times = [0.0, 1.0, 2.0, 30.0, 31.0]
    bounds = step_bounds(5, timestamps=times, max_speed_mps=25.0)
    assert bounds.tolist() == [25.0, 25.0, 700.0, 25.0]
    assert smooth_track(candidates, timestamps=times, max_speed_mps=25.0) [:2] == ([0, 0, 0, 0, 0], 0)
    # without timestamps, a 25 m step bound forbids the 400 m jump: the track keeps to the slow line
    assert smooth_track(candidates, max_step_m=25.0)[:2] == ([0, 0, 0, 1, 1], 0)
    # slack widens every bound: 25 + 380 m lets the jump through without timestamps
    assert smooth_track(candidates, max_step_m=25.0, slack_m=380.0)[:2] == ([0, 0, 0, 0, 0], 0)
    frames = [SequenceFrame(path=f"f{t}.jpg", timestamp=s) for t, s in enumerate(times)]
    track = build_track(candidates, frames, max_speed_mps=25.0)
    assert track.bound["timestamps"] is True and track.frames[3]["bound_m"] == pytest.approx(700.0)


def test_an_unavoidable_jump_is_one_break_to_the_best_candidates():
    candidates = [[at(0, 0.9), at(5, 0.1)], [at(1000, 0.8), at(990, 0.7)], [at(1010, 0.9)]]
    picks, breaks, _ = smooth_track(candidates, max_step_m=30.0)
    assert picks == [0, 0, 0] and breaks == 1


def test_bad_sequences_fail_cleanly(tmp_path):
    candidates, _ = flight_with_outliers()
    with pytest.raises(GeoBridgeError, match="max_step_m"):
        smooth_track(candidates)
    with pytest.raises(GeoBridgeError, match="max_speed_mps"):
        smooth_track(candidates, timestamps=list(range(7)))
    with pytest.raises(GeoBridgeError, match="frame 3"):
        smooth_track(candidates, timestamps=[0, 1, 2, 2, 4, 5, 6], max_speed_mps=10.0)
    with pytest.raises(GeoBridgeError, match="one finite timestamp per frame"):
        smooth_track(candidates, timestamps=[0, 1], max_speed_mps=10.0)
    with pytest.raises(GeoBridgeError, match="frame 1 has no candidates"):
        smooth_track([[at(0, 1.0)], []], max_step_m=10.0)
    with pytest.raises(GeoBridgeError, match="window"):
        smooth_track(candidates, max_step_m=10.0, window=0)
    mixed = [SequenceFrame(path="a.jpg", timestamp=0.0), SequenceFrame(path="b.jpg")]
    with pytest.raises(GeoBridgeError, match="b.jpg has none"):
        build_track([[at(0, 1.0)], [at(1, 1.0)]], mixed, max_speed_mps=10.0)
    with pytest.raises(DataError, match="not found"):
        read_sequence([tmp_path / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        read_sequence([tmp_path / "empty"])
    (tmp_path / "a.jpg").write_bytes(b"x")
    bad = tmp_path / "bad.jsonl"
    for line, message in (("{oops", "bad.jsonl:1: not JSON"), ('{"file": "a.jpg"}', "needs a 'path'"),
                          ('{"path": "a.jpg", "timestamp": "noon"}', "'timestamp' must be"),
                          ('{"path": "a.jpg", "lat": 1}', "both 'lat' and 'lon'"),
                          ('{"path": "b.jpg"}', "frame not found")):
        bad.write_text(line + "\n")
        with pytest.raises(DataError, match=message):
            read_sequence([bad])
    bad.write_bytes(b'{"path": "a\xe9.jpg"}\n')  # Latin-1, not UTF-8: named, never a UnicodeDecodeError
    with pytest.raises(DataError, match="bad.jsonl:1: not valid UTF-8"):
        read_sequence([bad])


def test_read_sequence_from_jsonl_folder_and_paths(tmp_path):
    for name in ("b.jpg", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [f.path for f in read_sequence([tmp_path])] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    listed = tmp_path / "flight.jsonl"
    listed.write_text('{"path": "b.jpg", "timestamp": "2026-01-01T00:00:00+00:00", "lat": 50, "lon": 15}\n\n'
                      '{"path": "a.jpg", "timestamp": "2026-01-01T00:00:02.5+00:00"}\n')
    frames = read_sequence([listed])
    assert [f.path for f in frames] == [str(tmp_path / "b.jpg"), str(tmp_path / "a.jpg")]
    assert frames[1].timestamp - frames[0].timestamp == pytest.approx(2.5) and frames[0].truth == (50.0, 15.0)
    assert [f.timestamp for f in read_sequence([tmp_path / "b.jpg", tmp_path / "a.jpg"])] == [None, None]


def test_cli_locates_a_sequence_against_an_index(world, tmp_path, capsys):
    out = tmp_path / "sat.gbx"
    assert main(["index", "build", "--checkpoint", str(world["run"]), "--data", str(world["data"]), "--split", "test",
                 "--out", str(out), "--views", "satellite", "--no-progress"]) == 0
    capsys.readouterr()
    data = world["data"]
    lines = [json.dumps({"path": str(data / "drone" / f"p00{i}" / "00.png"), "timestamp": 10.0 * i}) for i in (2, 3, 4)]
    flight = tmp_path / "flight.jsonl"
    flight.write_text("\n".join(lines) + "\n")
    assert main(["locate", "--index", str(out), "--sequence", str(flight), "--top-k", "6"]) == 2  # no speed bound
    assert "--max-speed-mps" in capsys.readouterr().err
    # 10 s at 2,000 km/s: 20,000 km, half the Earth's circumference, so every move is within reach and the track
    # is each frame's top-1 (the world's places lie in several countries, thousands of km apart)
    assert main(["locate", "--index", str(out), "--sequence", str(flight), "--top-k", "6",
                 "--max-speed-mps", "2000000", "--format", "geojson"]) == 0
    gj = json.loads(capsys.readouterr().out)
    line, *points = gj["features"]
    assert line["geometry"]["type"] == "LineString" and len(line["geometry"]["coordinates"]) == 3
    assert [p["properties"]["rank"] for p in points] == [1, 1, 1]
    for p in points:
        lon, lat = p["geometry"]["coordinates"]
        assert (lat, lon) == (p["properties"]["single_lat"], p["properties"]["single_lon"])
    assert math.isclose(points[1]["properties"]["bound_m"], 20_000_000.0)
    assert main(["locate", "--index", str(out), "--sequence", str(flight), "--image", "x.png"]) == 2
