"""asa-pretrain says what its checkpoints take on disk where they reach a gigabyte (model=primus: 2.5 GB, written
without a word before), from the network's parameters × 4 bytes × the copies each file keeps."""

from __future__ import annotations

import torch

from asa.api import load_config
from asa.api.machinery.pretraining import _method, checkpoint_bytes, size_note
from asa.models.keys import encoder_keys
from asa.train.optim import build_optimizer


def _network(*overrides: str, device: str = "cpu"):
    cfg = load_config("pretrain", "trainer=smoke", *overrides)
    torch.manual_seed(0)
    with torch.device(device):
        return cfg, _method(cfg).build_network()


def test_the_sizes_are_what_torch_saves(tmp_path):
    """last.pt's share is the weights and AdamW's state once it has stepped, best.pt's the weights, encoder.pt's the
    encoder's tensors: each within pickling's few kilobytes of the file torch.save writes."""
    cfg, net = _network("model=tiny", "data.crop=32")
    sizes = checkpoint_bytes(net, optimizer="adamw", keep_last=2)
    optimizer = build_optimizer(net, lr=1e-3, weight_decay=0.05)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    state = net.state_dict()
    prefixes = tuple(encoder_keys(net).prefixes)
    files = {"last.pt": {"model": state, "optimizer": optimizer.state_dict()}, "best.pt": {"model": state},
             "encoder.pt": {k: v for k, v in state.items() if k.startswith(prefixes)}}
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        written = (tmp_path / name).stat().st_size
        assert 0 <= written - sizes[name] < 200_000, (name, written, sizes[name])
    assert sizes["step_*.pt"] == 2 * sizes["last.pt"] and sizes["encoder.safetensors"] == sizes["encoder.pt"]
    assert size_note(net, cfg) is None  # 3.5 MB in all: nothing to say


def test_model_primus_states_its_2_5_gb():
    """Primus B at the 64³ crop: 107,481,337 parameters × 4 bytes = 0.43 GB; last.pt with AdamW's two moments
    1.29 GB, best.pt 0.43 GB, the encoder (eva, down_projection: 91,316,808 parameters) 0.37 GB twice: 2.45 GB."""
    cfg, net = _network("model=primus", "output_dir=runs/p", device="meta")  # shapes only, no memory
    assert checkpoint_bytes(net, optimizer="adamw", keep_last=0) == {
        "last.pt": 429_928_516 + 2 * 107_481_337 * 4, "best.pt": 429_928_516, "encoder.pt": 91_316_808 * 4,
        "encoder.safetensors": 91_316_808 * 4, "step_*.pt": 0}  # the weights: the parameters and 3,168 bytes of buffers
    assert size_note(net, cfg) == (
        "the network's 107.5 M parameters make about 2.5 GB of checkpoints in runs/p/checkpoints (GB: last.pt 1.29, "
        "best.pt 0.43, encoder.pt 0.37, encoder.safetensors 0.37; last.pt with adamw's state)")
