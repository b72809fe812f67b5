"""`python -m training`: bad input ends with one line and exit status 2; other errors keep their traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

import training.__main__ as training_cli


def test_bad_input_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-emoji"
    with pytest.raises(SystemExit) as exited:
        training_cli.cli(["evaluate", str(tmp_path), "--emoji", str(missing), "--scenes", str(tmp_path),
                          "--out", str(tmp_path / "results.json")])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error == f"python -m training evaluate: error: --emoji {missing}: no such folder\n"


def test_other_errors_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(argv: list[str]) -> None:
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(training_cli, "main", broken)
    with pytest.raises(ValueError, match="a bug"):
        training_cli.cli(["evaluate"])
