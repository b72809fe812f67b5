"""The CUDA settings (torch.compile with CUDA graphs) run on the CPU with a compile backend that
only records graphs: no compiled region reads another region's output (CUDA-graph trees would have
overwritten it), and after warm-up no gamma, size or task compiles anything new."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from models.speed.acceleration import Acceleration
from pipelines import Studio

CUDA_SETTINGS = Acceleration.for_device(torch.device("cuda"))


class RecordingBackend:
    """A torch.compile backend that runs graphs eagerly, counts them, and records every time a
    graph reads a tensor that is still the live output of an earlier graph call."""

    def __init__(self) -> None:
        self.graphs = 0
        self.crossings: list[int] = []
        self._outputs: dict[int, weakref.ref] = {}  # storage address -> an output tensor

    def __call__(self, graph: torch.fx.GraphModule, _inputs: list, **_kwargs) -> Callable:
        self.graphs += 1
        number = self.graphs

        def run(*args: object) -> object:
            self.crossings += [number for value in args if self._is_earlier_output(value)]
            outputs = graph.forward(*args)
            for value in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
                if isinstance(value, torch.Tensor):
                    self._outputs[value.untyped_storage().data_ptr()] = weakref.ref(value)
            return outputs

        return run

    def _is_earlier_output(self, value: object) -> bool:
        if not isinstance(value, torch.Tensor) or value.numel() == 0:
            return False
        output = self._outputs.get(value.untyped_storage().data_ptr())
        return output is not None and output() is not None


@pytest.fixture(scope="module")
def compiled() -> Iterator[tuple[Studio, RecordingBackend]]:
    """The tiny store with the sketch task under the CUDA settings, compiled with the recorder,
    warmed up. mkldnn is off: on the CPU, torch picks the convolution backend by size (the fake
    conv's _select_conv_backend adds a size guard), where CUDA takes cuDNN at every size."""
    backend = RecordingBackend()
    compile_function = torch.compile
    with pytest.MonkeyPatch.context() as patch, torch.backends.mkldnn.flags(enabled=False):
        patch.setattr(torch, "compile", lambda *args, **kwargs: compile_function(*args, **{**kwargs, "backend": backend}))
        studio = Studio.load("tiny", device="cpu", dtype="float32", tasks=("sketch_to_image",),
                             acceleration=CUDA_SETTINGS)
        studio.warm_up()
        yield studio, backend
    torch._dynamo.reset()


def sketch(height: int, width: int) -> np.ndarray:
    lines = np.full((height, width), 255, dtype=np.uint8)
    lines[height // 4: height * 3 // 4, width // 2] = 0
    return lines


def test_no_compiled_region_reads_another_regions_output(compiled: tuple[Studio, RecordingBackend]) -> None:
    studio, backend = compiled
    assert backend.graphs > 0
    studio.sketch_to_image(sketch(256, 256), "a cat", gamma=0.3)
    studio.text_to_image("a cat", width=256, height=256)
    studio.edit(Image.new("RGB", (256, 256), (90, 120, 150)), "a cat")
    assert backend.crossings == []


def sweep(studio: Studio, sides: tuple[tuple[int, int], ...]) -> None:
    """Sketches and edits at these (height, width), text to image at as many widths."""
    for height, width in sides:
        studio.sketch_to_image(sketch(height, width), "a cat", gamma=0.6)
        studio.edit(Image.new("RGB", (width, height), (90, 120, 150)), "a dog")
        studio.text_to_image("a cat", width=studio.limits.min_side + width, height=studio.limits.min_side)


def test_after_warm_up_no_gamma_size_or_task_compiles_anything(compiled: tuple[Studio, RecordingBackend]) -> None:
    """Sizes whose latents keep the UNet's upsampling factor (2 for the tiny UNet, 8 for SD-Turbo's:
    every size the UI's sliders offer, multiples of 64 px there)."""
    studio, backend = compiled
    warmed = backend.graphs
    for gamma in (0.0, 0.13, 0.4, 0.77, 1.0):
        studio.sketch_to_image(sketch(256, 256), "a cat", gamma=gamma)
    sweep(studio, ((320, 256), (448, 384), (512, 192)))
    assert backend.graphs == warmed


def test_sizes_off_the_unets_upsampling_factor_compile_nothing(compiled: tuple[Studio, RecordingBackend]) -> None:
    """diffusers' UNet guards `latent side % 2**upsamplers` (forward_upsample_size); latents off
    that factor run padded to it (models.running.latent_padding), so they take the warmed graph:
    136 px (17 latents), odd text to image widths and a 200x300 photo."""
    studio, backend = compiled
    warmed = backend.graphs
    sweep(studio, ((512, 136), (300, 200), (264, 328)))
    assert backend.graphs == warmed


def test_a_new_gamma_keeps_the_compiled_unets_conv_in_tensors(compiled: tuple[Studio, RecordingBackend]) -> None:
    """CUDA graphs capture static inputs by address: every gamma blends into the same conv_in."""
    studio, _ = compiled
    seen = []
    for gamma in (0.2, 0.9):
        with studio.store.model_call("sketch_to_image", gamma=gamma) as call:
            assert call.conv_in is not None and call.gamma_tensor is not None
            seen.append(tuple(tensor.data_ptr() for tensor in call.conv_in))
            assert float(call.gamma_tensor) == pytest.approx(gamma)
    assert seen[0] == seen[1]


def test_the_cuda_settings_line_says_tf32() -> None:
    assert CUDA_SETTINGS.tf32 and CUDA_SETTINGS.describe().endswith("tf32=on")
    assert "tf32" not in Acceleration.for_device(torch.device("cpu")).describe()
