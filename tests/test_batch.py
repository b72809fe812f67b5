"""python -m pipelines.batch: a folder with a broken file gives the other outputs (with their
settings), the broken one by name and exit status 1; a rerun calls the model only for what is
missing; an interrupted write leaves nothing behind; bad options are refused before loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipelines.batch as batch
from pipelines.batch import Item, image_items, prompt_items, run_batch
from pipelines.metadata import Settings, read_settings


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a_street.jpg", "b_field.png"):
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(folder / name)
    (folder / "c_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def counted(studio, monkeypatch):
    """The session studio with its translate and text_to_image calls counted."""
    calls: list[str] = []
    for task in ("translate", "text_to_image"):
        method = getattr(studio, task)

        def counting(*args, _method=method, _task=task, **kwargs):
            calls.append(_task)
            return _method(*args, **kwargs)

        monkeypatch.setattr(studio, task, counting)
    return studio, calls


def test_folder_with_a_broken_file_then_rerun_resumes(counted, photos: Path, tmp_path: Path) -> None:
    studio, calls = counted
    out = tmp_path / "out"
    out.mkdir()
    items = image_items(photos, out)
    assert [item.name for item in items] == ["a_street.jpg", "b_field.png", "c_broken.png"]  # notes.txt left out
    options = {"direction": "day_to_night"}

    first = run_batch(studio, "translate", items, options)
    assert [path.name for path in first.written] == ["a_street.png", "b_field.png"]
    assert [name for name, _ in first.failed] == ["c_broken.png"]
    assert "c_broken.png" in first.summary()
    assert len(calls) == 2
    written = Image.open(out / "a_street.png")
    assert written.size == (96, 64)
    assert read_settings(written).settings == Settings("translate", (96, 64), "tiny random sd-turbo + day2night",
                                                       direction="day_to_night")
    assert sorted(path.name for path in out.iterdir()) == ["a_street.png", "b_field.png"]  # no temp files

    calls.clear()
    again = run_batch(studio, "translate", items, options)
    assert calls == [] and len(again.skipped) == 2 and again.written == []
    assert [name for name, _ in again.failed] == ["c_broken.png"]

    (out / "b_field.png").unlink()
    third = run_batch(studio, "translate", items, options)
    assert calls == ["translate"] and [path.name for path in third.written] == ["b_field.png"]


def test_prompts_file(counted, tmp_path: Path) -> None:
    studio, calls = counted
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox, in snow\n\n  a lighthouse at dusk  \n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    items = prompt_items(prompts, out)
    assert [item.output.name for item in items] == ["0001-a-red-fox-in-snow.png", "0003-a-lighthouse-at-dusk.png"]
    report = run_batch(studio, "text_to_image", items, {"seed": 9, "width": 256, "height": 256})
    assert len(report.written) == 2 and calls == ["text_to_image"] * 2
    settings = read_settings(Image.open(out / "0001-a-red-fox-in-snow.png")).settings
    assert settings == Settings("text_to_image", (256, 256), "tiny random sd-turbo", prompt="a red fox, in snow", seed=9)
    again = studio.text_to_image(**settings.options())  # the chunk reproduces the image
    assert np.array_equal(np.asarray(again), np.asarray(Image.open(out / "0001-a-red-fox-in-snow.png")))


def test_interrupted_write_leaves_nothing(studio, photos: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()

    def interrupted(image, path, settings):
        Path(path).write_bytes(b"half a png")
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "save_png", interrupted)
    item = Item("a_street.jpg", out / "a_street.png", source=photos / "a_street.jpg")
    with pytest.raises(KeyboardInterrupt):
        run_batch(studio, "translate", [item], {"direction": "day_to_night"})
    assert list(out.iterdir()) == []


def test_command_line_end_to_end(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["edit", "--input", str(photos), "--output", str(out), "--prompt", "snow, at night", "--strength", "0.7",
            "--seed", "3", "--source", "tiny", "--device", "cpu"]
    assert batch.main(argv) == 1  # the broken file fails the run, after the others are written
    report = capsys.readouterr().out
    assert "Wrote 2, skipped 0 already done, 1 failed." in report and "c_broken.png" in report
    settings = read_settings(Image.open(out / "b_field.png")).settings
    assert settings == Settings("edit", (96, 64), "tiny random sd-turbo", prompt="snow, at night", seed=3,
                                strength=0.7)
    (photos / "c_broken.png").unlink()
    assert batch.main(argv) == 0
    assert "Wrote 0, skipped 2 already done, 0 failed." in capsys.readouterr().out


@pytest.mark.parametrize(("arguments", "message"), [
    (["edit", "--prompt", "x", "--strength", "2"], "strength=2.0"),
    (["edit", "--prompt", "x", "--seed", "-4"], "seed=-4"),
    (["edge_to_image", "--prompt", "x", "--low-threshold", "200", "--high-threshold", "100"], "low_threshold=200"),
])
def test_bad_options_refused_before_loading(photos: Path, tmp_path: Path, capsys, monkeypatch, arguments,
                                            message) -> None:
    monkeypatch.setattr(batch.Studio, "load", lambda *a, **k: pytest.fail("models loaded despite a bad option"))
    with pytest.raises(SystemExit) as exit_info:
        batch.main([*arguments, "--input", str(photos), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_input_of_the_wrong_kind_refused(photos: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        batch.main(["text_to_image", "--input", str(photos), "--output", str(tmp_path / "out")])
    assert "must be a text file of prompts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        batch.main(["translate", "--input", str(photos), "--output", str(photos), "--direction", "day_to_night"])
    assert "is the input folder" in capsys.readouterr().err


def test_defaults_are_the_api_defaults() -> None:
    args = batch.parser().parse_args(["sketch_to_image", "--input", "in", "--output", "out", "--prompt", "p"])
    assert (args.gamma, args.seed) == (0.4, 0)
    args = batch.parser().parse_args(["edge_to_image", "--input", "in", "--output", "out", "--prompt", "p"])
    assert (args.low_threshold, args.high_threshold) == (100, 200) and "seed" not in vars(args)  # no seed: deterministic
    args = batch.parser().parse_args(["text_to_image", "--input", "in", "--output", "out"])
    assert (args.width, args.height) == (None, None)  # the source's native side


def test_size_outside_the_source_limits_refused(tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        batch.main(["text_to_image", "--input", str(prompts), "--output", str(tmp_path / "out"), "--width", "100",
                    "--source", "tiny", "--device", "cpu"])
    assert exit_info.value.code == 2 and "width=100" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []
