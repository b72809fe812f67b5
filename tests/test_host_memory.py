"""Freed tensor memory kept in the process (models.running.host_memory): a network's next call
reuses pages already mapped instead of faulting in new ones."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from models.running.host_memory import retain_freed_memory
from models.speed.acceleration import Acceleration
from pipelines.studio import Studio

glibc_only = pytest.mark.skipif(not retain_freed_memory(), reason="malloc thresholds are glibc's")

# Page faults of a call (the median of 11) of a small conv net at 96 px (activations of about
# 1 MiB each), after warm calls, in a fresh process: with blocks over 128 KiB mmapped (glibc's
# starting threshold, held there), or retaining. A fresh process each, because a long one's heap
# history decides where its blocks come from; one thread, so all blocks are the caller's.
FAULTS_PER_CALL = """
import ctypes, json, resource, statistics, sys, torch
from torch import nn
from models.running.host_memory import M_MMAP_THRESHOLD, retain_freed_memory

torch.set_num_threads(1)
if sys.argv[1] == "retain":
    assert retain_freed_memory()
else:  # glibc's starting threshold, held there (its own heuristic sometimes raises it far enough)
    assert ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024) == 1
layers = [layer for _ in range(4) for layer in (nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU())]
net = nn.Sequential(*layers, nn.Upsample(scale_factor=2), nn.Conv2d(32, 16, 3, padding=1))
image = torch.randn(1, 32, 96, 96)
faults = []
with torch.inference_mode():
    for _ in range(5):
        net(image)
    for _ in range(11):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(image)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(statistics.median(faults)))
"""


def faults_per_call(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", FAULTS_PER_CALL, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@glibc_only
def test_a_network_call_stops_faulting_its_pages_in_again() -> None:
    returning, retaining = faults_per_call("return"), faults_per_call("retain")
    assert returning > 500, "blocks mmapped for each call and unmapped when freed fault their pages in again"
    assert retaining < returning / 10


@glibc_only
def test_loading_a_studio_on_the_cpu_retains_freed_memory() -> None:
    """Applied only when glibc took both thresholds (mallopt answered 1)."""
    studio = Studio.load(source="tiny", device="cpu", tasks=())
    assert studio.acceleration.retain_host_memory
    assert "retain_host_memory=on" in studio.acceleration.describe()


def test_it_can_be_turned_off() -> None:
    settings = replace(Acceleration.for_device(torch.device("cpu")), retain_host_memory=False)
    studio = Studio.load(source="tiny", device="cpu", tasks=(), acceleration=settings)
    assert not studio.acceleration.retain_host_memory
    assert "retain_host_memory=off" in studio.acceleration.describe()
