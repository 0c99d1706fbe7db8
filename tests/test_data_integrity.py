"""Damaged datasets are named, not skipped (issue 23): duplicate place ids, entries of image folders that are not
regular readable files, places without a view a command needs (counted on every command, an error with
``--strict``), and held-out countries the split does not have."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from test_data import make_geoloc

from geobridge.cli.main import main
from geobridge.data import check_dataset, load_places
from geobridge.errors import DataError

TINY = ["model.text_kind=hashing", "optim.batch_size=4", "data.num_workers=0", "optim.epochs=1"]


def _error(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err, (code, err)
    last = err.splitlines()[-1]
    assert last.startswith(f"geobridge {argv[0]}") and ": error: " in last, err
    return last


def _duplicate(root: Path) -> Path:
    lines = (root / "places.jsonl").read_text().splitlines()
    (root / "places.jsonl").write_text("\n".join([*lines, lines[1]]) + "\n")  # p001 again, on the last line
    return root


# ---------------------------------------------------------------------- duplicate place ids
def test_duplicate_place_ids_are_an_error_in_the_loader_and_in_data_check(tmp_path, capsys):
    root = _duplicate(make_geoloc(tmp_path / "w", n=6))
    with pytest.raises(DataError, match=r"places.jsonl:7: place_id 'p001' appears twice \(first on line 2\)"):
        load_places(root)
    report = check_dataset(root, show_progress_bar=False)
    assert [p.kind for p in report.problems] == ["duplicate-id"] and report.problems[0].path.endswith(":7")
    assert main(["data", "check", "--quiet", str(root)]) == 1
    assert "duplicate-id" in capsys.readouterr().out


def test_index_build_refuses_duplicate_place_ids(world, tmp_path, capsys):
    """Before: 40 items stored for 20 places."""
    root = _duplicate(make_geoloc(tmp_path / "w", n=6))
    out = tmp_path / "x.gbx"
    last = _error(["index", "build", "--checkpoint", str(world["run"]), "--data", str(root), "--out", str(out),
                   "--no-progress"], capsys)
    assert "appears twice" in last and not out.exists()


# ---------------------------------------------------------------------- entries that are not regular files
def _damage(root: Path, kind: str) -> Path:
    folder = root / "satellite" / "p002"
    if kind == "fifo":
        path = folder / "1.png"
        os.mkfifo(path)
    elif kind == "dangling":
        path = folder / "1.png"
        path.symlink_to(folder / "gone.png")
    elif kind == "loop":  # 1.png -> 2.png -> 1.png: both are named
        path = folder / "1.png"
        path.symlink_to(folder / "2.png")
        (folder / "2.png").symlink_to(path)
    elif kind == "place-fifo":  # the place's image folder itself
        for image in folder.iterdir():
            image.unlink()
        folder.rmdir()
        path = folder
        os.mkfifo(path)
    else:  # a FIFO without an image suffix is damage too
        path = folder / "notes"
        os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["fifo", "dangling", "loop", "place-fifo", "fifo-no-suffix"])
def test_entries_that_are_not_regular_files_are_errors_naming_the_path(tmp_path, kind):
    root = make_geoloc(tmp_path / "w", n=6)
    path = _damage(root, kind)
    with pytest.raises(DataError) as raised:
        load_places(root)
    assert str(path) in str(raised.value)
    report = check_dataset(root, show_progress_bar=False)
    named = [p.path for p in report.problems if p.kind == "bad-entry"]
    assert named == ([str(path), str(path.with_name("2.png"))] if kind == "loop" else [str(path)])


def test_loop_and_fifo_messages_say_what_the_entry_is(tmp_path):
    root = make_geoloc(tmp_path / "w", n=6)
    _damage(root, "loop")
    with pytest.raises(DataError, match="a symlink loop"):
        load_places(root)
    fifo_root = make_geoloc(tmp_path / "f", n=6)
    _damage(fifo_root, "fifo")
    with pytest.raises(DataError, match="a FIFO, not a regular file"):
        load_places(fifo_root)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs a character device")
def test_a_device_in_an_image_folder_is_an_error(tmp_path):
    root = make_geoloc(tmp_path / "w", n=6)
    link = root / "drone" / "p000" / "05.png"
    link.symlink_to("/dev/null")
    with pytest.raises(DataError, match="character device, not a regular file"):
        load_places(root)


def test_index_build_and_train_refuse_a_fifo_instead_of_skipping_it(world, tmp_path, capsys):
    root = make_geoloc(tmp_path / "w", n=8)
    path = _damage(root, "fifo")
    last = _error(["index", "build", "--checkpoint", str(world["run"]), "--data", str(root), "--out",
                   str(tmp_path / "x.gbx"), "--no-progress"], capsys)
    assert str(path) in last
    last = _error(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--no-eval", *TINY], capsys)
    assert str(path) in last


def test_the_report_reaches_stderr_outside_pytest(world, tmp_path):
    """No logging set up (as in the installed command): the warning still reaches stderr, one line per view."""
    import subprocess
    import sys

    root = _without_satellite(make_geoloc(tmp_path / "w", n=8), ("p006",))
    proc = subprocess.run([sys.executable, "-m", "geobridge", "index", "build", "--checkpoint", str(world["run"]),
                           "--data", str(root), "--out", str(tmp_path / "x.gbx"), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 of 2 places have no satellite view (p006)" in proc.stderr


def test_other_regular_files_and_subfolders_are_left_alone(tmp_path):
    root = make_geoloc(tmp_path / "w", n=6)
    (root / "satellite" / "p002" / "Thumbs.db").write_bytes(b"x")
    (root / "satellite" / "p002" / "old").mkdir()
    place = next(p for p in load_places(root) if p.place_id == "p002")
    assert [p.name for p in place.images["satellite"]] == ["0.png"]


# ---------------------------------------------------------------------- places without a view a command needs
def _without_satellite(root: Path, ids: tuple[str, ...]) -> Path:
    for pid in ids:
        for image in (root / "satellite" / pid).iterdir():
            image.unlink()
    return root


def test_view_coverage_counts_the_places_without_each_view(tmp_path):
    from geobridge.data.coverage import view_coverage

    root = _without_satellite(make_geoloc(tmp_path / "w", n=6), ("p001", "p004"))
    coverage = view_coverage(load_places(root), views=("drone", "satellite"))
    assert coverage.to_dict() == {"places": 6, "missing": {"drone": 0, "satellite": 2}}
    assert coverage.lines() == ["2 of 6 places have no satellite view (p001, p004)"]


def test_index_build_reports_places_left_out_and_strict_refuses(world, tmp_path, capsys, caplog):
    """Before: 15 of 20 places indexed without a word."""
    root = _without_satellite(make_geoloc(tmp_path / "w", n=8), ("p006",))  # p006, p007: the test split
    out = tmp_path / "x.gbx"
    argv = ["index", "build", "--checkpoint", str(world["run"]), "--data", str(root), "--out", str(out),
            "--no-progress"]
    with caplog.at_level(logging.WARNING, logger="geobridge.data.coverage"):
        assert main(argv) == 0
    assert "1 of 2 places have no satellite view (p006)" in caplog.text  # on stderr outside pytest
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["places"] == 1
    out.unlink()
    last = _error([*argv, "--strict"], capsys)
    assert "1 of 2 places have no satellite view (p006)" in last and "strict" in last and not out.exists()


def test_eval_reports_places_left_out_in_its_report_and_strict_refuses(world, tmp_path, capsys, caplog):
    root = _without_satellite(make_geoloc(tmp_path / "w", n=8), ("p006",))
    argv = ["eval", "--checkpoint", str(world["run"]), "--data", str(root), "--no-robustness"]
    with caplog.at_level(logging.WARNING, logger="geobridge.data.coverage"):
        assert main([*argv, "--out", str(tmp_path / "report")]) == 0
    assert "1 of 2 places have no satellite view (p006)" in caplog.text
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Coverage" in report and "1 of 2 places have no satellite view (p006)" in report
    last = _error([*argv, "--out", str(tmp_path / "strict"), "--strict"], capsys)
    assert "no satellite view" in last and not (tmp_path / "strict").exists()


def test_eval_report_says_when_every_place_has_every_view(world, tmp_path):
    assert main(["eval", "--checkpoint", str(world["run"]), "--data", str(world["data"]), "--out",
                 str(tmp_path / "report"), "--no-robustness"]) == 0
    assert "Every one of the 6 places has every view." in (tmp_path / "report" / "report.md").read_text()


def test_train_reports_a_dataset_without_satellite_views_and_strict_refuses(tmp_path, caplog):
    """Before: a dataset without any satellite folder trained as if nothing were missing."""
    from geobridge.train import Trainer, load_config

    root = make_geoloc(tmp_path / "w", n=8)
    for folder in (root / "satellite").iterdir():
        for image in folder.iterdir():
            image.unlink()
        folder.rmdir()
    (root / "satellite").rmdir()
    config = load_config(None, [f"data.root={root}", f"out={tmp_path / 'run'}", *TINY])
    with caplog.at_level(logging.WARNING, logger="geobridge.data.coverage"):
        Trainer(config, show_progress_bar=False)
    assert "6 of 6 places have no satellite view" in caplog.text
    with pytest.raises(DataError, match="6 of 6 places have no satellite view"):
        Trainer(config, show_progress_bar=False, strict=True)


def test_train_cli_strict_is_one_line(tmp_path, capsys):
    root = _without_satellite(make_geoloc(tmp_path / "w", n=8), ("p000",))
    last = _error(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--no-eval", "--strict", *TINY],
                  capsys)
    assert "1 of 6 places have no satellite view (p000)" in last


# ---------------------------------------------------------------------- held-out countries
def test_eval_holdout_of_a_country_without_places_is_an_error(world, tmp_path, capsys):
    """Before: the report's held-out group was silently empty."""
    argv = ["eval", "--checkpoint", str(world["run"]), "--data", str(world["data"]), "--no-robustness"]
    last = _error([*argv, "--out", str(tmp_path / "zz"), "--holdout", "ZZ"], capsys)
    assert "ZZ" in last and "have no place in" in last and "DE, NO" in last and not (tmp_path / "zz").exists()
    _error([*argv, "--out", str(tmp_path / "bad"), "--holdout", "N0"], capsys)  # not a country code at all
    assert main([*argv, "--out", str(tmp_path / "no"), "--holdout", "no"]) == 0
    metrics = json.loads((tmp_path / "no" / "metrics.json").read_text())
    assert any(key.startswith("out_of_domain/") for key in metrics)
