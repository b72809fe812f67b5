"""The UNet output is read as x0 the way the model folder's scheduler config says (prediction_type)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler

from models.running.sd_turbo import FINAL_TIMESTEP, PREDICTION_TYPES, x0_from_prediction
from models.weights.base_loading import BaseWeightsError, load_sd_turbo
from models.weights.configs import SCHEDULER_CONFIG
from models.weights.tiny import write_tiny_hub_layout


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("t", [1, 500, FINAL_TIMESTEP])
def test_x0_matches_diffusers_reading_of_each_prediction_type(prediction_type: str, t: int) -> None:
    config = {key: value for key, value in SCHEDULER_CONFIG.items() if key != "_class_name"}
    scheduler = DDPMScheduler.from_config({**config, "prediction_type": prediction_type})
    generator = torch.Generator().manual_seed(t)
    noisy, output = torch.randn((2, 1, 4, 8, 8), generator=generator)
    expected = scheduler.step(output, t, noisy).pred_original_sample
    alpha_bar = scheduler.alphas_cumprod[t]
    assert torch.allclose(x0_from_prediction(noisy, output, alpha_bar, prediction_type), expected, atol=1e-4)


def test_v_prediction_recovers_x0_without_magnifying_errors_at_the_final_step() -> None:
    alpha_bar = DDPMScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod[FINAL_TIMESTEP]
    generator = torch.Generator().manual_seed(0)
    x0, eps, error = torch.randn((3, 4, 8, 8), generator=generator)
    noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    v = alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
    assert torch.allclose(x0_from_prediction(noisy, v, alpha_bar, "v_prediction"), x0, atol=1e-5)
    assert torch.allclose(x0_from_prediction(noisy, eps, alpha_bar, "epsilon"), x0, atol=1e-4)
    small = 0.01 * error
    eps_miss = (x0_from_prediction(noisy, eps + small, alpha_bar, "epsilon") - x0).abs().mean()
    v_miss = (x0_from_prediction(noisy, v + small, alpha_bar, "v_prediction") - x0).abs().mean()
    assert eps_miss > 10 * v_miss


def with_prediction_type(folder: Path, prediction_type: str) -> Path:
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "prediction_type": prediction_type}))
    return folder


def test_a_model_folder_is_read_with_its_schedulers_prediction_type(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    epsilon = load_sd_turbo(write_tiny_hub_layout(tmp_path / "eps"), cpu, torch.float32)
    folder = with_prediction_type(write_tiny_hub_layout(tmp_path / "v"), "v_prediction")
    v = load_sd_turbo(folder, cpu, torch.float32)
    assert (epsilon.prediction_type, v.prediction_type) == ("epsilon", "v_prediction")

    noisy = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    text = v.text_encoder(v.tokenizer(["a red circle"], padding="max_length", return_tensors="pt").input_ids)[0]
    with torch.no_grad():
        output = v.unet(noisy, FINAL_TIMESTEP, encoder_hidden_states=text).sample
        alpha_bar = v.alphas_cumprod[FINAL_TIMESTEP]
        expected = x0_from_prediction(noisy, output, alpha_bar, "v_prediction")
        assert torch.allclose(v.predict_x0(noisy, FINAL_TIMESTEP, text), expected, atol=1e-5)
        assert not torch.allclose(epsilon.predict_x0(noisy, FINAL_TIMESTEP, text), expected, atol=1e-2)


def test_an_unknown_prediction_type_is_a_clear_error_naming_the_scheduler(tmp_path: Path) -> None:
    folder = with_prediction_type(write_tiny_hub_layout(tmp_path / "odd"), "flow")
    with pytest.raises(BaseWeightsError, match="prediction_type 'flow'") as raised:
        load_sd_turbo(folder, torch.device("cpu"), torch.float32)
    assert raised.value.path == folder / "scheduler"
