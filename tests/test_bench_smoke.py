"""`python -m bench --smoke` on the CPU with the tiny models: it runs every call, compiles
nothing after warm-up, and its exit status is its answer; a wrong image makes it answer no."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from bench import smoke
from bench.cli import main


def test_cpu_smoke_runs_every_call_and_answers(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--device", "cpu", "--smoke", "--threads", "1"])
    out = capsys.readouterr().out
    calls = [line for line in out.splitlines() if line.startswith("tiny ") and " dB, " in line]
    assert len(calls) == len(smoke.smoke_calls((256, 512)))
    assert "tiny: 0 graphs compiled after warm-up" in out
    assert status == (1 if "FAILED" in out else 0)
    assert ("smoke: NO" if status else "smoke: yes") in out


def test_a_wrong_image_answers_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smoke, "smoke_calls", lambda sides: [("blank", lambda studio: Image.new(
        "RGB", (8, 8), (255, 255, 255) if studio.acceleration.fold_lora else (0, 0, 0)))])
    lines: list[str] = []
    assert smoke.run_smoke(torch.device("cpu"), ("tiny",), lines.append) == 1
    assert lines[-1].startswith("smoke: NO") and "FAILED" in lines[0]
