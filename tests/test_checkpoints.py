"""Checkpoint safety and conversion, and the download helper (against a server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import torch

from models.weights.checkpoints import (CheckpointError, convert_cyclegan, convert_pix2pix, load_task_weights,
                                read_released_checkpoint, save_task_weights)
from models.weights.downloads import DownloadError, download_file, recorded_sha256


class RunsCode:
    """Unpickling this calls a function of the pickle's choosing: here, one that writes a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the pickle ran code"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.pkl"
    torch.save({"rank_unet": 8, "payload": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="Refusing to load"):
        read_released_checkpoint(path)
    assert not marker.exists()


def test_a_plain_checkpoint_dict_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.pkl"
    torch.save({"rank_unet": 8, "targets": ["to_q"], "state": {"w": torch.ones(2)}}, path)
    assert read_released_checkpoint(path)["targets"] == ["to_q"]


def test_a_non_dict_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pkl"
    torch.save([torch.ones(1)], path)
    with pytest.raises(CheckpointError, match="not the dict"):
        read_released_checkpoint(path)


def minimal_pix2pix() -> dict:
    skips = {f"decoder.skip_conv_{i}.base_layer.weight": torch.zeros(2, 2, 1, 1) for i in range(1, 5)}
    return {
        "unet_lora_target_modules": ["to_q"], "vae_lora_target_modules": ["conv1", "skip_conv_1"],
        "rank_unet": 8, "rank_vae": 4,
        "state_dict_unet": {"a.to_q.lora_A.default.weight": torch.ones(8, 4), "conv_in.weight": torch.ones(1),
                            "conv_in.bias": torch.ones(1)},
        "state_dict_vae": {**skips, "decoder.skip_conv_1.lora_A.vae_skip.weight": torch.ones(4, 2, 1, 1)},
    }


def test_missing_top_level_keys_are_named() -> None:
    raw = minimal_pix2pix()
    del raw["rank_vae"], raw["state_dict_unet"]
    with pytest.raises(CheckpointError, match="missing keys rank_vae, state_dict_unet"):
        convert_pix2pix(raw, "edge_to_image")


def test_unexpected_keys_are_named() -> None:
    raw = minimal_pix2pix()
    raw["state_dict_unet"]["mid_block.surprise.weight"] = torch.ones(1)
    with pytest.raises(CheckpointError, match="mid_block.surprise.weight"):
        convert_pix2pix(raw, "edge_to_image")


def test_missing_skip_weights_are_named() -> None:
    raw = minimal_pix2pix()
    del raw["state_dict_vae"]["decoder.skip_conv_3.base_layer.weight"]
    with pytest.raises(CheckpointError, match="skip_conv_3.weight"):
        convert_pix2pix(raw, "edge_to_image")


def test_pix2pix_conversion_round_trips_through_safetensors(tmp_path: Path) -> None:
    weights = convert_pix2pix(minimal_pix2pix(), "edge_to_image")
    assert list(weights.unet_lora["main"].state) == ["a.to_q.lora_A.weight"]
    assert weights.vae_lora.target_modules == ["conv1"] and weights.skip_lora.target_modules == ["skip_conv_1"]
    assert set(weights.skip_lora.state) == {"skip_conv_1.lora_A.weight"}
    path = tmp_path / "edge.safetensors"
    save_task_weights(weights, path)
    loaded = load_task_weights(path)
    assert loaded.task == "edge_to_image" and loaded.unet_lora["main"].rank == 8 and loaded.vae_lora.alpha == 8
    assert torch.equal(loaded.skip_weights["skip_conv_2.weight"], weights.skip_weights["skip_conv_2.weight"])
    assert torch.equal(loaded.conv_in["bias"], torch.ones(1))
    assert not (tmp_path / "edge.safetensors.part").exists()


def test_cyclegan_vae_keys_unknown_to_the_base_are_named() -> None:
    vae_state = {"vae.encoder.conv_in.weight": torch.ones(1), "vae.encoder.mystery.weight": torch.ones(1),
                 **{f"vae.decoder.skip_conv_{i}.weight": torch.ones(1) for i in range(1, 5)}}
    raw = {"l_target_modules_encoder": [], "l_target_modules_decoder": [], "l_modules_others": [], "rank_unet": 4,
           "sd_encoder": {}, "sd_decoder": {}, "sd_other": {}, "rank_vae": 4, "vae_lora_target_modules": [],
           "sd_vae_enc": vae_state, "sd_vae_dec": vae_state}
    with pytest.raises(CheckpointError, match="encoder.mystery.weight"):
        convert_cyclegan(raw, "day_to_night", "a2b", {"encoder.conv_in.weight": torch.ones(1)})


# --- downloads ----------------------------------------------------------------------------------------

class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with support for `Range: bytes=N-` (enough for resuming)."""

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def send_head(self):
        range_header = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not range_header or not path.is_file():
            return super().send_head()
        start = int(range_header.removeprefix("bytes=").split("-")[0])
        data = path.read_bytes()
        if start >= len(data):
            self.send_response(416)
            self.end_headers()
            return None
        self.send_response(206)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        handle = path.open("rb")
        handle.seek(start)
        return handle


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_RangeHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def test_download_records_the_checksum_and_is_done_once(file_server, tmp_path: Path) -> None:
    url, served = file_server
    payload = bytes(range(256)) * 4096
    (served / "model.pkl").write_bytes(payload)
    destination = tmp_path / "cache" / "model.pkl"
    download_file(f"{url}/model.pkl", destination)
    assert destination.read_bytes() == payload
    assert recorded_sha256(destination) == hashlib.sha256(payload).hexdigest()
    # the file and its record, each renamed from its .part name when whole: no .part is left
    assert sorted(path.name for path in destination.parent.iterdir()) == ["model.pkl", "model.pkl.sha256"]
    (served / "model.pkl").unlink()  # a second call must not touch the network
    assert download_file(f"{url}/model.pkl", destination) == destination


def test_download_resumes_a_partial_file(file_server, tmp_path: Path) -> None:
    url, served = file_server
    payload = bytes(range(256)) * 4096
    (served / "model.pkl").write_bytes(payload)
    destination = tmp_path / "model.pkl"
    (tmp_path / "model.pkl.part").write_bytes(payload[:300_000])
    download_file(f"{url}/model.pkl", destination, expected_sha256=hashlib.sha256(payload).hexdigest())
    assert destination.read_bytes() == payload


def test_a_checksum_mismatch_leaves_no_file(file_server, tmp_path: Path) -> None:
    url, served = file_server
    (served / "model.pkl").write_bytes(b"not what was published")
    destination = tmp_path / "model.pkl"
    with pytest.raises(DownloadError, match="does not match"):
        download_file(f"{url}/model.pkl", destination, expected_sha256="0" * 64)
    assert not destination.exists() and not (tmp_path / "model.pkl.part").exists()


def test_a_missing_file_is_a_clear_error(file_server, tmp_path: Path) -> None:
    url, _ = file_server
    with pytest.raises(DownloadError, match="404"):
        download_file(f"{url}/absent.pkl", tmp_path / "absent.pkl")
