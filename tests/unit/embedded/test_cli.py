"""`matris-data synth` command line: registration, dry run, and the missing-teacher error."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from matris.datasets.synth import cli


def _parser():
    parser = argparse.ArgumentParser(prog="matris-data")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_add_parser_registers_synth_with_handler(tmp_path):
    args = _parser().parse_args(["synth", "--teacher", "chgnet", "--out",
                                 str(tmp_path / "x.extxyz.gz"), "--seed", "3", "--frames", "50"])
    assert args.func is cli.handler
    assert (args.seed, args.frames, args.teacher) == (3, 50, "chgnet")
    with pytest.raises(SystemExit):
        _parser().parse_args(["synth", "--out", "x", "--teacher", "no-such-teacher"])


def test_missing_teacher_fails_with_install_hint(tmp_path, monkeypatch, capsys):
    # Make `import chgnet` fail even where the extra is installed.
    monkeypatch.setitem(sys.modules, "chgnet", None)
    out = tmp_path / "x.extxyz.gz"
    args = _parser().parse_args(["synth", "--out", str(out), "--frames", "10",
                                 "--work-dir", str(tmp_path / "w")])
    assert args.func(args) != 0
    err = capsys.readouterr().err
    assert "pip install" in err and "teacher" in err
    assert not out.exists()


def test_bad_settings_are_reported(tmp_path, capsys):
    args = _parser().parse_args(["synth", "--out", str(tmp_path / "x.gz"), "--frames", "0"])
    assert args.func(args) == 2
    assert "frames" in capsys.readouterr().err


def test_dry_run_needs_no_teacher(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "chgnet", None)
    args = _parser().parse_args(["synth", "--out", str(tmp_path / "x.gz"), "--frames", "60",
                                 "--dry-run"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["frames"].values()) == 60
    assert summary["n_elements"] == len(summary["elements"]) > 10
    assert all(8 <= int(n) <= 64 for n in summary["natoms_static"])


def test_importing_cli_does_not_import_the_teacher():
    import subprocess

    code = ("import sys, matris.datasets.synth.cli; "
            "sys.exit(1 if any(m.split('.')[0] == 'chgnet' for m in sys.modules) "
            "else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
