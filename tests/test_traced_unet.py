"""The UNet of folded calls through traced graphs (models.running.traced_unet), the CPU default for
small bases: the same images as the eager UNet (and VAE) for every task and gamma, graphs that read the
UNet's own tensors (so folded weights reach them), and tracing only where layers run plain."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from models.running.swapped import owner
from models.running.traced_unet import TracedUNet
from models.speed.acceleration import Acceleration
from pipelines import Studio
from tests.conftest import line_sketch, pixel_distance

CPU = torch.device("cpu")
DEFAULTS = Acceleration.for_device(CPU)


@pytest.fixture(scope="module")
def traced(studio: Studio) -> Studio:
    """The tiny Studio as Studio.load makes it (shared; tests that change a weight restore it)."""
    assert studio.acceleration.trace_unet, "the CPU default for a small base traces the UNet"
    return studio


@pytest.fixture(scope="module")
def eager() -> Studio:
    """No traced network at all: the reference for the traced UNet here and the traced VAE
    (tests/test_traced_vae.py), whose images are compared on every tab below."""
    return Studio.load("tiny", device="cpu", acceleration=replace(DEFAULTS, trace_unet=False, trace_vae=False))


def calls(studio: Studio, photo: Image.Image, only: tuple[str, ...] | None = None) -> dict[str, Image.Image]:
    """Tasks and gammas in turn, so each call folds other weights than the one before (only: these)."""
    made: dict[str, Callable[[], Image.Image]] = {
        "text": lambda: studio.text_to_image("a cat", seed=1, width=256, height=256),
        "sketch 0.4": lambda: studio.sketch_to_image(line_sketch(), "a cat", gamma=0.4, seed=3),
        "edit": lambda: studio.edit(photo, "a cat", strength=0.7, seed=2),
        "sketch 1.0": lambda: studio.sketch_to_image(line_sketch(), "a cat", gamma=1.0),
        "translate": lambda: studio.translate(photo, direction="day_to_night"),
        "edge": lambda: studio.edge_to_image(photo, "a cat")[1],
        "sketch 96 px": lambda: studio.sketch_to_image(line_sketch(96), "a cat", gamma=0.7, seed=3),
        "text 320x256": lambda: studio.text_to_image("a cat", seed=1, width=320, height=256),
        "other direction": lambda: studio.translate(photo, direction="night_to_day")}
    return {name: make() for name, make in made.items() if only is None or name in only}


def test_traced_calls_give_the_eager_images(traced: Studio, eager: Studio, photo: Image.Image) -> None:
    """UNet and VAE traced (the CPU default) against neither: the same images on every tab. The
    traced decoders upsample with transposed convolutions (models.running.upsampling), the same
    function to float rounding: in float32 the images agree to a twentieth of a level, in bfloat16
    (where the CPU has it, the default) within its rounding of the combined kernels."""
    assert traced.acceleration.trace_vae
    in_float32 = replace(DEFAULTS, bfloat16=())
    every_network = ("text", "sketch 0.4", "edit", "translate")  # plain decoder, encoder, skip decoders
    ours = calls(Studio.load("tiny", device="cpu", acceleration=in_float32), photo, every_network)
    theirs = calls(Studio.load("tiny", device="cpu", acceleration=replace(in_float32, trace_unet=False,
                                                                          trace_vae=False)), photo, every_network)
    for name in ours:
        assert pixel_distance(ours[name], theirs[name]) < 0.05, name
    ours, theirs = calls(traced, photo), calls(eager, photo)
    for name in ours:
        assert psnr_db(ours[name], theirs[name]) > 40, name
    for name, image in calls(traced, photo).items():  # the same again, from the kept graphs
        assert pixel_distance(image, ours[name]) == 0.0, name


def psnr_db(a: Image.Image, b: Image.Image) -> float:
    error = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def test_the_graphs_read_the_unets_own_tensors(traced: Studio) -> None:
    """A weight changed in place (as folding does) changes what the traced graph computes."""
    before = traced.text_to_image("a dog", seed=4, width=256, height=256)
    module, attribute = owner(traced.store.base.unet, "conv_out.weight")
    weight = module._parameters[attribute]
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(0.5)
    try:
        changed = traced.text_to_image("a dog", seed=4, width=256, height=256)
    finally:
        with torch.no_grad():
            weight.copy_(kept)
    assert pixel_distance(changed, before) > 1.0
    assert pixel_distance(traced.text_to_image("a dog", seed=4, width=256, height=256), before) == 0.0


def test_only_folded_calls_are_traced(traced: Studio, eager: Studio) -> None:
    with traced.store.model_call() as call:
        assert isinstance(call.traced_unet, TracedUNet)
    with eager.store.model_call() as call:
        assert call.traced_unet is None
    unfolded = Studio.load("tiny", device="cpu", tasks=(), acceleration=replace(DEFAULTS, fold_lora=False))
    assert not unfolded.acceleration.trace_unet  # tracing needs folding: only folded calls run plain layers
    with pytest.raises(RuntimeError, match="fold_adapters"):
        unfolded.store.trace_unet()


def test_a_graph_per_shape_and_only_the_newest_are_kept(traced: Studio) -> None:
    base = traced.store.base
    graphs = TracedUNet(base.unet, max_graphs=2)
    embeddings = traced.store.prompt_embeddings("a cat")
    with traced.store.model_call():
        for side in (4, 6, 8, 4):
            sample = torch.randn(1, 4, side, side)
            eps = graphs(sample, base.timestep(999), embeddings, {})
            expected = base.unet(sample, base.timestep(999), encoder_hidden_states=embeddings).sample
            torch.testing.assert_close(eps, expected, atol=1e-5, rtol=0)
        assert graphs.traced_shapes == 2
        with pytest.raises(ValueError, match="only conv_in"):
            graphs(sample, base.timestep(999), embeddings, {"conv_out.weight": torch.zeros(1)})


def test_warm_up_traces_the_served_shapes() -> None:
    """So the first stroke or prompt waits for no tracing (about a second a shape)."""
    studio = Studio.load("tiny", device="cpu", tasks=("sketch_to_image",))
    studio.warm_up(preview_side=256)
    with studio.store.model_call() as call:
        graphs = call.traced_unet
    assert graphs is not None and graphs.traced_shapes == 2  # the native 512 px and the 256 px preview
    studio.text_to_image("a cat", seed=1)
    studio.sketch_to_image(np.full((256, 256), 255, np.uint8) - np.eye(256, dtype=np.uint8) * 255, "a cat")
    assert graphs.traced_shapes == 2


def test_a_shape_that_cannot_be_traced_runs_eagerly_with_a_warning(traced: Studio,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tracing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tracing is not available")

    base = traced.store.base
    graphs = TracedUNet(base.unet)
    embeddings = traced.store.prompt_embeddings("a cat")
    sample = torch.randn(1, 4, 6, 6)
    monkeypatch.setattr(torch.jit, "trace", no_tracing)
    with traced.store.model_call(), pytest.warns(RuntimeWarning, match="runs eagerly"):
        eps = graphs(sample, base.timestep(999), embeddings, {})
    with traced.store.model_call():
        expected = base.unet(sample, base.timestep(999), encoder_hidden_states=embeddings).sample
    torch.testing.assert_close(eps, expected)
