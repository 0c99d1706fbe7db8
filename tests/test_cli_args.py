"""The command-line defects of issue 23, each run as a user would: a clean one-line error naming the option or
path, exit code 2, no traceback, nothing written. (The generated bad values of every option of every command are in
test_fuzz_cli.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from geobridge.cli.main import main
from geobridge.errors import GeoBridgeError


def _fails(argv: list[str], capsys, *expected: str) -> str:
    """Run the CLI; it must exit 2 with one ``error:`` line holding every ``expected`` text, and no traceback."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1] if err else ""
    assert code == 2, (code, err)
    assert "Traceback" not in err and last.startswith(f"geobridge {argv[0]}") and ": error: " in last, err
    for text in expected:
        assert text in last, (text, last)
    return last


@pytest.fixture(scope="module")
def built(world, tmp_path_factory):
    """An index of the test world's satellite views, built once through the CLI."""
    out = tmp_path_factory.mktemp("built") / "sat.gbx"
    assert main(["index", "build", "--checkpoint", str(world["run"]), "--data", str(world["data"]), "--out",
                 str(out), "--no-progress"]) == 0
    return {**world, "index": out, "image": world["data"] / "drone" / "p003" / "00.png"}


def test_locate_out_naming_a_folder_is_refused_before_any_work(built, tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    _fails(["locate", "--index", str(built["index"]), "--image", str(built["image"]), "--out", str(folder)], capsys,
           f"--out {folder} is a folder")
    assert list(folder.iterdir()) == []


def test_locate_and_index_build_out_under_a_file_are_refused(built, tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    out = blocker / "sub" / "result.json"
    _fails(["locate", "--index", str(built["index"]), "--image", str(built["image"]), "--out", str(out)], capsys,
           f"--out {out}", f"{blocker} is not a folder")
    _fails(["index", "build", "--checkpoint", str(built["run"]), "--data", str(built["data"]), "--out",
            str(blocker / "sat.gbx"), "--no-progress"], capsys, f"{blocker} is not a folder")
    assert blocker.read_text() == "keep me"


def test_locate_out_replaces_an_existing_file(built, tmp_path, capsys):
    out = tmp_path / "result.json"
    out.write_text("old")
    assert main(["locate", "--index", str(built["index"]), "--image", str(built["image"]), "--out", str(out)]) == 0
    assert isinstance(json.loads(out.read_text()), dict)  # the old file replaced by the result


def test_eval_out_an_existing_file_is_refused(built, tmp_path, capsys):
    report = tmp_path / "report.md"
    report.write_text("an older report")
    _fails(["eval", "--checkpoint", str(built["run"]), "--data", str(built["data"]), "--out", str(report),
            "--no-robustness"], capsys, f"--out {report} exists and is not a folder")
    assert report.read_text() == "an older report"


@pytest.mark.parametrize("command", ["index", "eval"])
def test_batch_size_zero_is_refused_by_the_parser(built, tmp_path, capsys, command):
    argv = (["index", "build", "--checkpoint", str(built["run"]), "--data", str(built["data"]), "--out",
             str(tmp_path / "x.gbx")] if command == "index" else
            ["eval", "--checkpoint", str(built["run"]), "--data", str(built["data"]), "--out", str(tmp_path / "r")])
    _fails([*argv, "--batch-size", "0"], capsys, "argument --batch-size: expected an int in [1, 65536], got '0'")
    assert not (tmp_path / "x.gbx").exists() and not (tmp_path / "r").exists()


def test_serve_port_out_of_range_is_refused_and_zero_is_allowed(built, capsys):
    _fails(["serve", "--index", str(built["index"]), "--port", "99999"], capsys,
           "argument --port: expected an int in [0, 65535], got '99999'")
    from geobridge.cli.main import parse

    assert parse(["serve", "--index", str(built["index"]), "--port", "0"]).port == 0  # 0: the system picks one


def test_locate_radius_nan_is_refused(built, capsys):
    _fails(["locate", "--index", str(built["index"]), "--image", str(built["image"]), "--radius-km", "nan",
            "--fusion", "consensus"], capsys, "argument --radius-km: expected a finite number")


def test_train_resume_into_a_run_of_another_model_config_is_one_line(tmp_path, capsys):
    """Before: ``RuntimeError: Error(s) in loading state_dict``; the run folder must stay as it was."""
    from test_data import make_geoloc

    data = make_geoloc(tmp_path / "world", n=10)
    run = tmp_path / "run"
    tiny = ["model.text_kind=hashing", "optim.batch_size=8", "data.num_workers=0", "optim.epochs=1"]
    assert main(["train", "--data", str(data), "--out", str(run), "--no-eval", *tiny]) == 0
    narrow = json.loads((Path(__file__).parents[1] / "src/geobridge/models/model_configs/gb-tiny.json").read_text())
    narrow["embed_dim"] = 64
    (tmp_path / "narrow.json").write_text(json.dumps(narrow))
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    _fails(["train", "--data", str(data), "--out", str(run), "--resume", "--no-eval", *tiny,
            f"model.name={tmp_path / 'narrow.json'}"], capsys,
           "cannot resume", "another model config", "embed_dim: 128 in the checkpoint, 64 now")
    after = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    assert after == before


# ---------------------------------------------------------------------- the --out rule itself
def test_the_output_rule(tmp_path):
    from geobridge.cli.args import check_output

    file, folder = tmp_path / "a.json", tmp_path / "d"
    file.write_text("x")
    folder.mkdir()
    assert check_output(file, kind="file") == file  # replaced atomically
    assert check_output(tmp_path / "new" / "deep.json", kind="file")  # parents are created
    assert check_output(folder, kind="folder") == folder
    assert check_output(tmp_path / "new-folder", kind="new-folder")
    for path, kind, message in ((folder, "file", "is a folder"), (file, "folder", "is not a folder"),
                                (folder, "new-folder", "exists; choose a new folder"),
                                (file / "x", "file", "is not a folder"), (file / "x" / "y", "folder", "not a folder")):
        with pytest.raises(GeoBridgeError, match=message):
            check_output(path, kind=kind)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(GeoBridgeError, match="not a regular file"):
        check_output(fifo, kind="file")
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(GeoBridgeError, match="not a regular file"):
        check_output(link, kind="file")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_the_output_rule_refuses_a_read_only_folder(tmp_path):
    from geobridge.cli.args import check_output

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(GeoBridgeError, match="not writable"):
            check_output(folder / "x.json", kind="file")
    finally:
        folder.chmod(0o700)


def test_index_build_out_kind_follows_its_layout(built, tmp_path, capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    _fails(["index", "build", "--checkpoint", str(built["run"]), "--data", str(built["data"]), "--out", str(folder)],
           capsys, f"--out {folder} is a folder")
    file = tmp_path / "idx.gbx"
    file.write_text("")
    _fails(["index", "build", "--checkpoint", str(built["run"]), "--data", str(built["data"]), "--out", str(file),
            "--layout", "folder"], capsys, f"--out {file} exists and is not a folder")


def test_synth_refuses_bad_names_and_counts_before_writing(tmp_path, capsys):
    out = tmp_path / "world"
    _fails(["synth", "--out", str(out), "--countries", "DE,ZZ"], capsys, "argument --countries")
    _fails(["synth", "--out", str(out), "--shift-views", "drone,aerial"], capsys, "argument --shift-views")
    _fails(["synth", "--out", str(out), "--places", "1e9"], capsys, "argument --places")
    assert not out.exists()


def test_help_and_version_still_exit_cleanly(capsys):
    assert main(["--version"]) == 0
    assert main(["locate", "--help"]) == 0
    assert "--radius-km" in capsys.readouterr().out

