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

# Page faults per call of a small conv net at 96 px (activations of about 1 MiB each), after warm
# calls, in a fresh process: glibc untouched, or retaining. A fresh process each, because a long
# one's heap history decides where its blocks come from; one thread, so all blocks are the
# caller's.
FAULTS_PER_CALL = """
import json, resource, sys, torch
from torch import nn
from models.running.host_memory import retain_freed_memory

torch.set_num_threads(1)
if sys.argv[1] == "retain":
    assert retain_freed_memory()
layers = [layer for _ in range(4) for layer in (nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU())]
net = nn.Sequential(*layers, nn.Upsample(scale_factor=2), nn.Conv2d(32, 16, 3, padding=1))
image = torch.randn(1, 32, 96, 96)
with torch.inference_mode():
    for _ in range(5):
        net(image)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        net(image)
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5))
"""


def faults_per_call(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", FAULTS_PER_CALL, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@glibc_only
def test_a_network_call_stops_faulting_its_pages_in_again() -> None:
    untouched, retaining = faults_per_call("untouched"), faults_per_call("retain")
    assert untouched > 500, "glibc as it starts hands the activations' blocks back to the kernel and faults them in again"
    assert retaining < untouched / 10


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
