"""The VAE of folded calls through traced graphs (models.running.traced_vae), the CPU default for
small bases: one decoder graph per task and shape whatever the gamma, graphs that read the VAE's
own tensors, and the eager VAE for tasks that swap VAE tensors in or where tracing fails. That the
traced networks give the eager images on every tab is tests/test_traced_unet.py's first test."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image

from models.running.skip_vae import decode_with_skips
from models.running.swapped import owner
from models.running.traced_vae import TracedVAE
from models.running.upsampling import UpsamplerKernels, strided_upsamplers
from models.speed.acceleration import Acceleration
from pipelines import Studio
from tests.conftest import line_sketch, pixel_distance

CPU = torch.device("cpu")
DEFAULTS = Acceleration.for_device(CPU)


@pytest.fixture(scope="module")
def traced(studio: Studio) -> Studio:
    """The tiny Studio as Studio.load makes it (shared; tests that change a weight restore it)."""
    assert studio.acceleration.trace_vae, "the CPU default for a small base traces the task VAE"
    return studio


def traced_vae(studio: Studio) -> TracedVAE:
    with studio.store.model_call(next(iter(studio.store.tasks))) as call:
        assert call.traced_vae is not None
        return call.traced_vae


def test_one_decoder_graph_per_task_and_shape_serves_every_gamma(photo: Image.Image) -> None:
    studio = Studio.load("tiny", device="cpu", tasks=("sketch_to_image", "day_to_night"))
    graphs = traced_vae(studio)
    for gamma in (0.2, 0.5, 0.9):
        studio.sketch_to_image(line_sketch(), "a cat", gamma=gamma, seed=5)
    assert graphs.traced_graphs == 2  # one encoder and one decoder graph at 64 px
    studio.translate(photo, direction="day_to_night")  # another shape, another task's skip convs
    assert graphs.traced_graphs == 4
    studio.text_to_image("a cat", seed=1, width=256, height=256)  # the plain decoder
    assert graphs.traced_graphs == 5


def test_gamma_is_an_input_of_the_decoder_graph(traced: Studio) -> None:
    """The same latents and skips decoded at two gammas through one graph: each as the eager decoder."""
    store = traced.store
    pixels = (torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(store.base.vae_dtype)
    with store.model_call("sketch_to_image", gamma=1.0) as call:
        graphs, task = call.traced_vae, call.require_task()
        assert graphs is not None
        mean, skips = graphs.encode_with_skips(pixels)
        decoder = store.base.vae.decoder
        for gamma in (0.25, 1.0):
            decoded = graphs.decode_with_skips(mean, skips, "sketch_to_image", task.skips, gamma)
            with strided_upsamplers(decoder, UpsamplerKernels(decoder).current()):  # as the graphs upsample
                expected = decode_with_skips(store.base.vae, mean, skips, task.skips, gamma)
            torch.testing.assert_close(decoded, expected, atol=0, rtol=0)
        low = graphs.decode_with_skips(mean, skips, "sketch_to_image", task.skips, 0.25)
        assert (low - decoded).abs().max() > 1e-3  # gamma changes what the one graph computes


def test_without_transposed_upsamplers_the_graphs_decode_as_the_eager_decoder() -> None:
    studio = Studio.load("tiny", device="cpu", tasks=("sketch_to_image",),
                         acceleration=replace(DEFAULTS, transposed_upsamplers=False))
    assert studio.acceleration.trace_vae and not studio.acceleration.transposed_upsamplers
    store = studio.store
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)).to(store.base.vae_dtype)
    with store.model_call() as call:
        assert call.traced_vae is not None
        torch.testing.assert_close(call.traced_vae.decode(latents),
                                   store.base.vae.decode(latents, return_dict=False)[0], atol=0, rtol=0)


@pytest.mark.parametrize("name", ["decoder.conv_out.weight", "decoder.up_blocks.1.upsamplers.0.conv.weight"])
def test_the_graphs_read_the_vaes_own_tensors(traced: Studio, name: str) -> None:
    """A weight changed in place (as folding does) changes what the traced graphs compute; an
    upsampler's too, whose transposed kernel the graphs take as an input (models.running.upsampling)."""
    before = traced.sketch_to_image(line_sketch(), "a dog", gamma=1.0)
    module, attribute = owner(traced.store.base.vae, name)
    weight = module._parameters[attribute]
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(0.5)
    try:
        changed = traced.sketch_to_image(line_sketch(), "a dog", gamma=1.0)
    finally:
        with torch.no_grad():
            weight.copy_(kept)
    assert pixel_distance(changed, before) > 1.0
    assert pixel_distance(traced.sketch_to_image(line_sketch(), "a dog", gamma=1.0), before) == 0.0


def test_a_task_that_swaps_vae_tensors_in_runs_the_eager_vae(photo: Image.Image) -> None:
    """Released CycleGAN-Turbo weights replace VAE tensors per direction; the graphs would not see them."""
    studio = Studio.load("tiny", device="cpu", tasks=("day_to_night",))
    task = studio.store.tasks["day_to_night"]
    module, attribute = owner(studio.store.base.vae, "decoder.conv_out.bias")
    task.vae_overrides["decoder.conv_out.bias"] = module._parameters[attribute].detach() + 0.5
    try:
        swapped = studio.translate(photo, direction="day_to_night")
        assert traced_vae(studio).traced_graphs == 0
    finally:
        task.vae_overrides.clear()
    plain = studio.translate(photo, direction="day_to_night")
    assert traced_vae(studio).traced_graphs == 2
    assert pixel_distance(swapped, plain) > 1.0


def test_tracing_the_vae_needs_folding() -> None:
    unfolded = Studio.load("tiny", device="cpu", tasks=(), acceleration=replace(DEFAULTS, fold_lora=False))
    assert not unfolded.acceleration.trace_vae
    with pytest.raises(RuntimeError, match="fold_adapters"):
        unfolded.store.trace_vae()
    with unfolded.store.model_call() as call:
        assert call.traced_vae is None


def test_a_vae_that_cannot_be_traced_runs_eagerly_with_a_warning(traced: Studio,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tracing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tracing is not available")

    studio = Studio.load("tiny", device="cpu", tasks=("sketch_to_image",))
    monkeypatch.setattr(torch.jit, "trace", no_tracing)
    with pytest.warns(RuntimeWarning, match="VAE encoder could not be traced.*runs eagerly"):
        image = studio.sketch_to_image(line_sketch(), "a cat", gamma=0.5, seed=2)
    monkeypatch.undo()
    assert pixel_distance(image, traced.sketch_to_image(line_sketch(), "a cat", gamma=0.5, seed=2)) == 0.0
