"""The run folder's software record (``environment.json``) and the known-bad version warnings, with the
versions monkeypatched: torch 2.9.* under fp16/bf16 on CUDA, cuDNN 9.10-9.15 with TF32 on CUDA."""
from __future__ import annotations

import json

import pytest
import torch

from asa.train import environment as envmod
from asa.train.environment import (ENVIRONMENT_FILE, cudnn_version, environment, environment_warnings,
                                   record_environment)


@pytest.mark.parametrize("number, text", [(91002, "9.10.2"), (91500, "9.15.0"), (90100, "9.1.0"), (8907, "8.9.7"),
                                          (0, None)])
def test_cudnn_version_numbers(number, text):
    assert cudnn_version(number) == text


def _fake(monkeypatch, *, torch_version: str, cudnn: int | None, gpus=("NVIDIA H100 80GB HBM3",)):
    monkeypatch.setattr(torch, "__version__", torch_version)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: cudnn is not None)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: cudnn)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: gpus[i])
    monkeypatch.setattr(envmod, "_nccl_version", lambda: "2.27.3")


def test_record_has_the_versions(monkeypatch):
    _fake(monkeypatch, torch_version="2.9.1+cu128", cudnn=91002)
    record = environment()
    assert record["torch"] == "2.9.1+cu128" and record["cuda"] == "12.8" and record["cudnn"] == "9.10.2"
    assert record["nccl"] == "2.27.3" and record["gpus"] == ["NVIDIA H100 80GB HBM3"]
    assert {"asa", "git_commit", "python", "cudnn_allow_tf32"} <= record.keys()


@pytest.mark.parametrize("torch_version, cudnn, device, amp, expected", [
    ("2.9.0+cu128", 90800, "cuda", torch.bfloat16, ["torch 2.9.0+cu128"]),
    ("2.9.1", 90800, "cuda", torch.float16, ["torch 2.9.1"]),
    ("2.9.1", 90800, "cuda", None, []),                                  # fp32: cuDNN still in use
    ("2.8.0", 91002, "cuda", None, ["cuDNN 9.10.2"]),
    ("2.10.0", 91500, "cuda", torch.bfloat16, ["cuDNN 9.15.0"]),
    ("2.9.0", 91300, "cuda", torch.bfloat16, ["torch 2.9.0", "cuDNN 9.13.0"]),
    ("2.10.0", 91600, "cuda", torch.bfloat16, []),                       # fixed cuDNN
    ("2.10.0", 90900, "cuda", None, []),
    ("2.9.0", 91002, "cpu", torch.bfloat16, []),                          # nothing to warn about off CUDA
])
def test_known_bad_versions_warn_once_each(monkeypatch, torch_version, cudnn, device, amp, expected):
    _fake(monkeypatch, torch_version=torch_version, cudnn=cudnn)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    lines = environment_warnings(environment(), device=device, amp=amp)
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected):
        assert line.startswith(start)
        assert "install" in line  # each names its fix
    if any("cuDNN" in s for s in expected):
        assert "allow_tf32 = False" in lines[-1]


def test_tf32_off_silences_the_cudnn_warning(monkeypatch):
    _fake(monkeypatch, torch_version="2.8.0", cudnn=91002)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert environment_warnings(environment(), device="cuda", amp=None) == []


def test_each_start_is_appended(tmp_path, monkeypatch):
    _fake(monkeypatch, torch_version="2.8.0", cudnn=91002)
    record_environment(tmp_path)
    _fake(monkeypatch, torch_version="2.10.0", cudnn=91600)
    record_environment(tmp_path, resumed_from=str(tmp_path / "checkpoints" / "last.pt"))
    starts = json.loads((tmp_path / ENVIRONMENT_FILE).read_text())["starts"]
    assert [s["torch"] for s in starts] == ["2.8.0", "2.10.0"] and [s["cudnn"] for s in starts] == ["9.10.2", "9.16.0"]
    assert "resumed_from" not in starts[0] and starts[1]["resumed_from"].endswith("last.pt")


def test_a_new_run_folder_records_its_environment(tmp_path):
    from asa.api.machinery.rundir import prepare_run_dir
    from asa.train.distributed import DistEnv

    run = prepare_run_dir(tmp_path / "run", app="asa-pretrain", resume=False, overwrite=False,
                          run_config={"seed": 0}, compat_keys=(), env=DistEnv(device=torch.device("cpu")))
    try:
        run.write_config({"seed": 0})
    finally:
        run.release()
    (start,) = json.loads((tmp_path / "run" / ENVIRONMENT_FILE).read_text())["starts"]
    assert start["torch"] == torch.__version__ and start["cudnn"] == cudnn_version()
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_predict_warns_on_a_known_bad_cuda_setup(monkeypatch, capsys):
    """asa-predict says the warning before it reads the checkpoint (here: a missing one, refused after)."""
    import importlib

    from asa.api import load_config

    predict = importlib.import_module("asa.api.predict")  # the module (asa.api.predict is also its function)

    _fake(monkeypatch, torch_version="2.9.0", cudnn=91002)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setattr(predict, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(predict, "resolve_amp", lambda amp, device, option: torch.float16)
    with pytest.raises(Exception):
        predict.predict(load_config("predict", "checkpoint=/nonexistent/best.pt", "input=/nonexistent",
                                    "output=/nonexistent/out"))
    err = capsys.readouterr().err
    assert "[asa-predict] warning: torch 2.9.0" in err and "[asa-predict] warning: cuDNN 9.10.2" in err


@pytest.fixture
def precisions():
    """The torch >= 2.9 ``fp32_precision`` settings, restored after the test (they are no plain attributes
    monkeypatch could restore)."""
    if not hasattr(torch.backends.cudnn, "conv"):
        pytest.skip("torch without the fp32_precision API")
    nodes = (torch.backends.cudnn.conv, torch.backends.cuda.matmul, torch.backends)
    saved = [node.fp32_precision for node in nodes]
    yield
    for node, value in zip(nodes, saved):
        node.fp32_precision = value


def test_the_new_tf32_api_is_read_and_never_crashes(monkeypatch, precisions):
    """torch >= 2.9: after ``cudnn.conv.fp32_precision = "ieee"`` the legacy cuDNN flag raises when read (conv and
    RNN differ); the record reads the new API instead, and a run on a bad cuDNN is not warned (TF32 is off)."""
    _fake(monkeypatch, torch_version="2.10.0", cudnn=91002)
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    with pytest.raises(RuntimeError):
        bool(torch.backends.cudnn.allow_tf32)  # what the record read before
    record = environment()
    assert record["cudnn_allow_tf32"] is False
    assert environment_warnings(record, device="cuda", amp=None) == []
    torch.backends.cudnn.conv.fp32_precision = "none"  # unset: inherits from its parents
    torch.backends.fp32_precision = "tf32"
    assert environment()["cudnn_allow_tf32"] is True and environment()["cuda_matmul_allow_tf32"] is True
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    assert environment()["cuda_matmul_allow_tf32"] is False
    assert environment_warnings(environment(), device="cuda", amp=None)[0].startswith("cuDNN 9.10.2")


@pytest.mark.parametrize("torch_version, cudnn, expected", [
    ("2.9.1", 91500, ["cuDNN 9.15.0"]),        # 2.9.1 uses cuDNN for half 3D convolutions from cuDNN 9.15 on
    ("2.9.1", 91600, []),
    ("2.9.0", 91600, ["torch 2.9.0"]),          # 2.9.0 does not, whatever the cuDNN
])
def test_torch_291_with_a_new_cudnn_is_not_warned(monkeypatch, torch_version, cudnn, expected):
    _fake(monkeypatch, torch_version=torch_version, cudnn=cudnn)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    lines = environment_warnings(environment(), device="cuda", amp=torch.bfloat16)
    assert [line.split(" has ")[0].split(" runs ")[0] for line in lines] == expected
    # the advice never lands on a version the other warning names
    assert all("install torch 2.8" not in line for line in lines)


def test_warnings_are_added_to_this_start(tmp_path, monkeypatch):
    from asa.train.environment import record_warnings

    _fake(monkeypatch, torch_version="2.8.0", cudnn=91002)
    record_environment(tmp_path)
    record_environment(tmp_path, resumed_from="last.pt")
    record_warnings(tmp_path, ["cuDNN 9.10.2 has a broken TF32 kernel"])
    starts = json.loads((tmp_path / ENVIRONMENT_FILE).read_text())["starts"]
    assert "warnings" not in starts[0] and starts[1]["warnings"] == ["cuDNN 9.10.2 has a broken TF32 kernel"]
    (tmp_path / "fresh").mkdir()
    record_warnings(tmp_path / "fresh", ["x"])
    (fresh,) = json.loads((tmp_path / "fresh" / ENVIRONMENT_FILE).read_text())["starts"]
    assert fresh["warnings"] == ["x"] and fresh["torch"] == "2.8.0"
