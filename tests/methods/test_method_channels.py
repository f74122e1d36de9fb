"""``data.channels`` is the channel count of every pretraining method: the masked autoencoder (method=asa|mae)
builds its network's input channels from it, ``method.in_channels`` (its earlier second name) is refused naming
``data.channels``, and a run folder written with it resumes without it."""
from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from asa.api import load_config
from asa.api.configuration.compat import added_settings, current_config, moved_key, removed_key
from asa.api.machinery.pretraining import _method
from asa.train.checkpoint import check_compatible
from tests.fixtures.console import run_each
from tests.fixtures.runs import child_env


TWO = "data.channels=[t1,t2]"


@pytest.mark.parametrize("model", [("model=tiny",), ("model=resenc", "model.size=tiny")])
@pytest.mark.parametrize("method", ["asa", "mae"])
def test_a_two_channel_pretraining_builds_two_input_channels_from_data_channels(model, method):
    cfg = load_config("pretrain", *model, f"method={method}", TWO, "data.crop=32")
    pretraining = _method(cfg)
    assert pretraining.network_kwargs()["in_channels"] == 2
    net = pretraining.build_network()
    assert net.in_channels == 2 and net.network_kwargs["in_channels"] == 2  # the record a checkpoint carries
    x = torch.randn(1, 2, 32, 32, 32)
    out = net(x)
    assert torch.isfinite(out.loss)
    one = _method(load_config("pretrain", *model, f"method={method}", "data.crop=32"))
    assert one.build_network().in_channels == 1  # the presets' T1 alone


@pytest.mark.slow  # the console script in a child process
def test_method_in_channels_is_refused_naming_data_channels_before_anything_is_written(tmp_path):
    """On the command line (as a preset key and with +), for either method and either family: exit 2, one
    line that names both options, no run folder."""
    out = tmp_path / "run"
    lines = [["method.in_channels=2", f"output_dir={out}"],
             ["method=mae", "model=resenc", TWO, "method.in_channels=1", f"output_dir={out}"],
             ["+method.in_channels=2", f"output_dir={out}"]]
    for code, stderr in run_each("asa.cli.pretrain", lines, env=child_env(), cwd=str(tmp_path)):
        said = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2 and len(said) == 1, stderr
        assert "method.in_channels was removed" in said[0] and "data.channels" in said[0]
    assert not out.exists()


def test_a_run_saved_with_method_in_channels_resumes_without_it(capsys):
    """A run written before (method.in_channels beside data.channels, equal in any run that took a step) is
    compared as this version reads it: the key is read without, said in one line; the channels still must
    match."""
    cfg = load_config("pretrain", "model=tiny", TWO)
    now = asdict(cfg)
    saved = {**now, "method": {**now["method"], "in_channels": 2}}
    check_compatible(saved, now, cfg.resume_must_match, source="last.pt", moved=moved_key, current=current_config,
                     removed=removed_key, added=added_settings)
    assert "read without method.in_channels=2 (removed since:" in capsys.readouterr().err
    one = {**saved, "data": {**saved["data"], "channels": ["t1"]}}
    with pytest.raises(Exception, match="data.channels"):
        check_compatible(one, now, cfg.resume_must_match, source="last.pt", moved=moved_key, current=current_config,
                         removed=removed_key, added=added_settings)
