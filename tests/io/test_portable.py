"""Encoder exports as safetensors: tensors and metadata round-trip, no pickle, atomic writes, clear errors."""
from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from asa.io import CheckpointError, load_export_safetensors, save_checkpoint, save_export_safetensors
from asa.models import load_weights

SPEC = {"arch": "asa_pretrain", "kwargs": {"img_size": [32, 32, 32], "embed_dim": 8, "pos_mode": "mirror"}}


def _export() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"encoder": {"encoder.blocks.0.attn.qkv.weight": torch.randn(24, 8, generator=g),
                        "encoder.norm.bias": torch.randn(8, generator=g),
                        "encoder.blocks.0.attn.rel_pos_bias": torch.randn(3, 15, generator=g).t(),  # not contiguous
                        "encoder.patch_embed.proj.weight": torch.randn(8, 1, 2, 2, 2, generator=g).half()},
            "network": SPEC, "source": "best.pt", "step": 1234}


def test_round_trip_keeps_tensors_bit_for_bit_and_the_provenance(tmp_path):
    export = _export()
    path = save_export_safetensors(tmp_path / "encoder.safetensors", export)
    back = load_export_safetensors(path)
    assert back["network"] == SPEC and back["source"] == "best.pt" and back["step"] == 1234
    assert back["encoder"].keys() == export["encoder"].keys()
    for key, value in export["encoder"].items():
        assert back["encoder"][key].dtype == value.dtype and torch.equal(back["encoder"][key], value), key
    assert load_weights(path)["network"] == SPEC  # dispatch on the suffix


def test_the_file_is_plain_safetensors_without_pickle(tmp_path):
    path = save_export_safetensors(tmp_path / "encoder.safetensors", _export())
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])  # the whole header is JSON ...
    assert len(raw) == 8 + size + max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert b"\x80\x04" not in raw[: 8 + size] and not raw.startswith(b"PK")  # ... no pickle stream, no zip archive
    tensors = load_file(path)  # the safetensors library alone reads it
    assert torch.equal(tensors["encoder.norm.bias"], _export()["encoder"]["encoder.norm.bias"])
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == "pt" and meta["asa_format"] == "asa.encoder" and meta["encoder_prefix"] == "encoder."
    assert json.loads(meta["network"]) == SPEC and meta["step"] == "1234"


def test_an_export_without_a_spec_is_not_written(tmp_path):
    export = {k: v for k, v in _export().items() if k != "network"} | {"config": {"data": {"size": 32}}}
    with pytest.raises(ValueError, match=r"e.safetensors: no network spec"):
        save_export_safetensors(tmp_path / "e.safetensors", export)
    assert not (tmp_path / "e.safetensors").exists()


def test_writes_atomically_over_an_older_export(tmp_path):
    path = tmp_path / "encoder.safetensors"
    save_export_safetensors(path, {**_export(), "step": 1})
    save_export_safetensors(path, {**_export(), "step": 2})
    assert load_export_safetensors(path)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.safetensors"]  # no temporary files left
    with pytest.raises(ValueError, match="no tensors"):
        save_export_safetensors(path, {**_export(), "encoder": {}})
    assert load_export_safetensors(path)["step"] == 2  # a failed write leaves the previous file


def _random(path):
    path.write_bytes(os.urandom(4096))


def _truncated(path):
    save_export_safetensors(path, _export())
    path.write_bytes(path.read_bytes()[:-100])


def _foreign(path):
    save_file({"weight": torch.zeros(3)}, str(path))  # valid safetensors, not an asa export


def _torch_file(path):
    save_checkpoint(path, _export())  # a torch.save file under the .safetensors name


@pytest.mark.parametrize("make, message", [
    (_random, "not a readable safetensors file"), (_truncated, "not a readable safetensors file"),
    (_foreign, "not an asa encoder export"), (_torch_file, "not a readable safetensors file"),
    (None, "no such file"),
])
def test_a_bad_file_is_named_in_the_error(tmp_path, make, message):
    path = tmp_path / "encoder.safetensors"
    if make is not None:
        make(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_export_safetensors(path)
    assert str(path) in str(info.value)
