"""Smoke test of `python -m bench` on tiny models (seconds): the report has every row and its
values are sane. Not a timing test: nothing here asserts how fast anything is."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.ablations import ABLATIONS, default_ablations, not_measured_reasons
from bench.cli import main
from bench.hardware import MatmulRate
from bench.settings import main as settings_main
from bench.measure import Measurement, measure_pair
from bench.report import to_markdown
from bench.run import BenchConfig, BenchReport, PhaseInfo, TaskResult
from bench.tasks import BENCH_TASKS
from models.running.devices import native_bfloat16
from models.running.host_memory import retain_freed_memory
from models.speed.acceleration import Acceleration
from tests.mini_folder import write_fake_mini


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    folder = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    try:
        status = main(["--tiny", "--device", "cpu", "--repeats", "2", "--threads", "1", "--warm-up", "--ablations",
                       "attention,channels_last,precision,prepared_inputs,taesd,merged_lora",
                       "--json", str(folder / "report.json"), "--markdown", str(folder / "report.md")])
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    return json.loads((folder / "report.json").read_text()), (folder / "report.md").read_text()


def _check_measurement(measurement: dict[str, Any], repeats: int) -> None:
    times = measurement["times_s"]
    assert len(times) == repeats
    assert all(math.isfinite(t) and t > 0 for t in times)
    assert measurement["first_call_s"] > 0
    assert min(times) <= measurement["median_s"] <= measurement["p95_s"] <= max(times)
    assert measurement["images_per_s"] == pytest.approx(1 / measurement["median_s"])
    assert measurement["peak_memory_bytes"] > 50 * 2**20  # a Python process with torch loaded


def test_every_task_is_measured_on_both_sides(tiny_run: tuple[dict[str, Any], str]) -> None:
    report, _ = tiny_run
    assert [task["task"] for task in report["tasks"]] == list(BENCH_TASKS)
    for task in report["tasks"]:
        assert task["errors"] == {}, task["errors"]
        _check_measurement(task["ours"], repeats=2)
        _check_measurement(task["baseline"], repeats=2)
        assert task["speedup"] == pytest.approx(task["baseline"]["median_s"] / task["ours"]["median_s"])


def test_flops_are_counted_and_the_preview_is_cheaper(tiny_run: tuple[dict[str, Any], str]) -> None:
    report, _ = tiny_run
    flops = {task["task"]: task["flops"] for task in report["tasks"]}
    assert all(value > 0 for value in flops.values())
    assert flops["text_to_image_preview"] < flops["text_to_image"]
    assert flops["edit"] > flops["text_to_image"]  # the encoder comes on top
    assert {rate["dtype"] for rate in report["matmul"]} == {"float32", "bfloat16"}
    assert all(rate["tflops"] > 0 for rate in report["matmul"])


def test_ablations_cover_what_applies_on_the_cpu(tiny_run: tuple[dict[str, Any], str]) -> None:
    report, _ = tiny_run
    measured = {ablation["optimisation"] for ablation in report["ablations"]}
    assert measured == {"SDPA attention", "channels_last", "bfloat16 weights",
                        "caption embedding and timestep prepared once", "TAESD preview decode", "merged LoRA"}
    for ablation in report["ablations"]:
        _check_measurement(ablation["without"], repeats=2)
        _check_measurement(ablation["with_"], repeats=2)
    merged = next(a for a in report["ablations"] if a["optimisation"] == "merged LoRA")
    assert "task switch" in merged["note"]
    skipped = {item["optimisation"]: item["reason"] for item in report["not_measured"]}
    assert set(skipped) == {"compile", "cuda_graphs"}
    assert set(skipped) | {"attention", "channels_last", "precision", "prepared_inputs", "taesd",
                           "merged_lora"} == set(ABLATIONS)


def test_phases_record_build_and_resident_memory(tiny_run: tuple[dict[str, Any], str]) -> None:
    report, _ = tiny_run
    for phase in (report["ours_phase"], report["baseline_phase"]):
        assert phase["build_s"] > 0
        assert phase["resident_bytes"] > 0
    assert report["ours_phase"]["tasks_installed"] == 6  # every task, as the app keeps them
    assert report["ours_phase"]["warm_up_s"] > 0
    assert report["baseline_phase"]["warm_up_s"] is None
    assert report["config"]["scale"] == "tiny"
    assert report["config"]["dtype"] == "torch.float32"
    assert set(report["versions"]) >= {"python", "torch", "diffusers", "transformers", "peft"}


def test_markdown_names_the_command_and_every_table(tiny_run: tuple[dict[str, Any], str]) -> None:
    _, markdown = tiny_run
    assert "`python -m bench --tiny --device cpu --repeats 2 --threads 1 --warm-up --ablations" in markdown
    for heading in ("#### Tasks", "#### Physical floor", "#### Each optimisation on its own", "Not measured"):
        assert heading in markdown
    for task in BENCH_TASKS:
        assert f"`{task}`" in markdown
    assert "Issue 4 targets" not in markdown  # GPU-only section
    bf16 = "vae+preview_decoder" if native_bfloat16(torch.device("cpu")) else "none"  # as applied: not the tiny UNet
    retain = "on" if retain_freed_memory() else "off"  # glibc only
    assert ("the Studio as the app loads it (attention=sdpa, channels_last=vae+preview_decoder, compile=off, "
            f"fold_lora=on, bfloat16={bf16}, trace_unet=on, trace_vae=on, transposed_upsamplers=on, "
            f"retain_host_memory={retain}: "
            "Studio.load's") in markdown


def test_a_source_is_benchmarked_as_the_app_loads_it(tmp_path: Path) -> None:
    """--source mini --model-dir loads ours with Studio.load and the baseline from the same weights
    in fp32, at the source's native side, with the live sketch preview at the app's preview side
    for the device; --paired alternates them. A source without a preview decoder says so."""
    mini = write_fake_mini(tmp_path / "mini", native_side=128)
    threads = torch.get_num_threads()
    try:
        status = main(["--source", "mini", "--model-dir", str(mini), "--device", "cpu", "--repeats", "1",
                       "--threads", "1", "--tasks", "text_to_image,text_to_image_preview,sketch_to_image_preview",
                       "--ablations", "taesd", "--no-flops", "--paired",
                       "--json", str(tmp_path / "report.json"), "--markdown", str(tmp_path / "report.md")])
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["source"] == "mini"
    assert (report["config"]["size"], report["config"]["preview_side"]) == (128, 128)  # CPU previews: >= 128 px
    results = {task["task"]: task for task in report["tasks"]}
    for name in ("text_to_image", "sketch_to_image_preview"):
        assert results[name]["errors"] == {}, results[name]["errors"]
        _check_measurement(results[name]["ours"], repeats=1)
        _check_measurement(results[name]["baseline"], repeats=1)
    assert "no preview decoder" in results["text_to_image_preview"]["errors"]["ours"]
    assert {"optimisation": "taesd", "reason": "this source has no preview decoder"} in report["not_measured"]
    assert report["ours_phase"]["tasks_installed"] == 6
    markdown = (tmp_path / "report.md").read_text()
    assert f"mini weights from {mini}" in markdown and "- Paired: ours and the baseline were resident" in markdown


@pytest.mark.parametrize("arguments", [["--tasks", "painting"], ["--size", "100"], ["--size", "0"],
                                       ["--size", "2048"], ["--preview-side", "100"], ["--source", "nowhere"],
                                       ["--repeats", "0"], ["--ablations", "magic"], ["--ablations", "cuda_graphs"],
                                       ["--compile-mode", "fast"]])
def test_bad_arguments_are_refused(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--tiny", "--device", "cpu", *arguments])
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cpu_defaults_leave_out_the_slow_and_the_cuda_only_ablations() -> None:
    cpu_default = default_ablations(torch.device("cpu"))
    native = native_bfloat16(torch.device("cpu"))  # bf16 is measured where the CPU has its instructions
    assert ("precision" in cpu_default) == native
    assert "compile" not in cpu_default and "cuda_graphs" not in cpu_default
    assert default_ablations(torch.device("cuda")) == list(ABLATIONS)
    reasons = {item.optimisation: item.reason for item in not_measured_reasons(cpu_default, torch.device("cpu"))}
    assert set(reasons) == {"compile", "cuda_graphs"} | (set() if native else {"precision"})
    assert all(reasons.values())


def test_gpu_report_checks_the_issue_targets() -> None:
    """The CUDA-only part of the report, rendered from made-up measurements (no GPU here)."""
    def timing(seconds: float) -> Measurement:
        return Measurement(first_call_s=30.0, times_s=(seconds, seconds), peak_memory_bytes=5 * 10**9)

    config = BenchConfig(device=torch.device("cuda"), dtype=torch.float16, size=512, repeats=2,
                         tasks=["text_to_image", "edit"], ablations=[], acceleration=Acceleration())
    tasks = [TaskResult("text_to_image", "diffusers", ours=timing(0.010), baseline=timing(0.080), flops=3.16e12),
             TaskResult("edit", "diffusers", ours=timing(0.050), baseline=timing(0.100), flops=4.24e12)]
    report = BenchReport(config=config, date="2026-11-22", device_name="GPU", versions={}, precision_flags={},
                         memory_kind="GPU max allocated", matmul=[MatmulRate("float16", 8192, 700.0)],
                         ours_phase=PhaseInfo(build_s=5.0, resident_bytes=int(3.9e9), tasks_installed=6),
                         tasks=tasks)
    markdown = to_markdown(report)
    assert "#### Issue 4 targets" in markdown
    assert "| `text_to_image` images/s | >= 60 | 100 | yes |" in markdown
    assert "| `edit` images/s | >= 40 | 20 | **no** |" in markdown
    assert "| `edit` speed-up | >= 5x | 2.00x | **no** |" in markdown
    assert "<= 7 GB | 3.90 GB | yes |" in markdown
    assert "| `text_to_image` | 3.160 | 4.5 | 222 | 100 | 45% |" in markdown  # floor: 3.16 TFLOP / 700 TFLOP/s


def test_paired_calls_alternate() -> None:
    order: list[str] = []
    ours, baseline = measure_pair(lambda: order.append("ours"), lambda: order.append("baseline"), repeats=2,
                                  device=torch.device("cpu"))
    assert order == ["ours", "baseline"] * 3  # one cold pair, then two timed pairs
    assert len(ours.times_s) == len(baseline.times_s) == 2
    assert ours.peak_memory_bytes == baseline.peak_memory_bytes



def test_a_setting_is_measured_off_and_on_with_calls_alternating(tmp_path: Path) -> None:
    """python -m bench.settings: two studios, one with the setting off, their calls in turn."""
    out = tmp_path / "trace_vae.md"
    assert settings_main(["--source", "tiny", "--setting", "trace_vae", "--tasks", "sketch_to_image,translate",
                          "--pairs", "2", "--threads", "1", "--markdown", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "- Off: " in text and "trace_vae=off" in text.split("- On: ")[0]
    assert "trace_vae=on" in text.split("- On: ")[1]
    assert "`python -m bench.settings --source tiny --setting trace_vae" in text
    for task in ("sketch_to_image", "translate"):
        assert f"| `{task}` |" in text
    with pytest.raises(SystemExit, match="unknown"):
        settings_main(["--source", "tiny", "--setting", "trace_vae", "--tasks", "painting"])


@pytest.mark.skipif(not retain_freed_memory(), reason="malloc thresholds are glibc's")
def test_a_process_wide_setting_is_measured_with_each_side_in_its_own_process(tmp_path: Path) -> None:
    """retain_host_memory holds for a whole process: each side's studio is loaded in a child."""
    out = tmp_path / "retain.md"
    assert settings_main(["--source", "tiny", "--setting", "retain_host_memory", "--tasks", "sketch_to_image",
                          "--pairs", "2", "--threads", "1", "--markdown", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    off_line, on_line = (next(line for line in text.splitlines() if line.startswith(start))
                         for start in ("- Off: ", "- On: "))
    assert "retain_host_memory=off" in off_line and "retain_host_memory=on" in on_line
    assert "each side in a process of its own" in text
    assert "| `sketch_to_image` |" in text
