"""`python -m bench --smoke` on the CPU with the tiny models: it runs every call, compiles
nothing after warm-up and answers yes; a wrong image, or a wrong conv_in blend in the shipped path
alone, makes it answer no."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from bench import smoke
from bench.cli import main
from models.running import img2img_turbo
from models.running.sd_turbo import SDTurbo
from models.running.store import ModelCall
from models.running.task_model import TaskModel
from pipelines import Studio


def test_cpu_smoke_runs_every_call_and_answers(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--device", "cpu", "--smoke", "--threads", "1"])
    out = capsys.readouterr().out
    calls = [line for line in out.splitlines() if line.startswith("tiny ") and " dB, " in line]
    assert len(calls) == len(smoke.smoke_calls((256, 512)))
    assert "tiny: 0 graphs compiled after warm-up" in out
    assert "FAILED" not in out
    assert status == 0 and "smoke: yes" in out


def test_a_wrong_image_answers_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smoke, "smoke_calls", lambda sides: [("blank", lambda studio: Image.new(
        "RGB", (8, 8), (255, 255, 255) if studio.acceleration.fold_lora else (0, 0, 0)))])
    lines: list[str] = []
    assert smoke.run_smoke(torch.device("cpu"), ("tiny",), lines.append) == 1
    assert lines[-1].startswith("smoke: NO") and "FAILED" in lines[0]


def test_a_conv_in_blend_that_ignores_gamma_answers_no(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped studio alone blends the sketch's conv_in at gamma 1 whatever the call's gamma:
    the kind of mismatch the smoke is for."""
    shipped_bases: list[SDTurbo] = []
    make_studios, blend = smoke.studios, img2img_turbo._conv_in_for_call

    def studios(scale: str, device: torch.device) -> tuple[Studio, Studio]:
        shipped, eager = make_studios(scale, device)
        shipped_bases.append(shipped.store.base)
        return shipped, eager

    def blend_ignoring_gamma(call: ModelCall, task: TaskModel) -> dict[str, torch.Tensor]:
        shipped = any(call.base is base for base in shipped_bases)
        return blend(dataclasses.replace(call, gamma=1.0) if shipped else call, task)

    sketch_call = [(name, call) for name, call in smoke.smoke_calls((256, 512)) if name == "sketch_to_image 256 gamma 0.4"]
    monkeypatch.setattr(smoke, "studios", studios)
    monkeypatch.setattr(smoke, "smoke_calls", lambda sides: sketch_call)
    monkeypatch.setattr(img2img_turbo, "_conv_in_for_call", blend_ignoring_gamma)
    lines: list[str] = []
    assert smoke.run_smoke(torch.device("cpu"), ("tiny",), lines.append) == 1
    assert "FAILED" in lines[0] and lines[-1].startswith("smoke: NO")
