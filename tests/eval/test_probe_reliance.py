"""Frozen-encoder probes (planted signal vs noise) and the encoder-reliance diagnostic."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from asa.data import discover, get_task, preprocess_for_inference, write_demo_dataset
from asa.eval.probe import build_probe_set, knn_accuracy, make_probe, patch_fractions, ridge_r2
from asa.eval.metrics import EMPTY_HD95
from asa.eval.reliance import encoder_reliance
from asa.models import ASA, PRESETS, Capabilities


def test_ridge_recovers_a_planted_linear_signal_and_not_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6000, 24, generator=g)
    w = torch.randn(24, 3, generator=g)
    y = x @ w + 0.01 * torch.randn(6000, 3, generator=g)
    r2 = ridge_r2(x[:4000], y[:4000], x[4000:], y[4000:], lam=1.0)
    assert torch.all(r2 > 0.99)
    noise = torch.randn(6000, 3, generator=g)
    r2 = ridge_r2(x[:4000], noise[:4000], x[4000:], noise[4000:], lam=1.0)
    assert torch.all(r2.abs() < 0.03)
    assert torch.isnan(ridge_r2(x[:4000], y[:4000], x[4000:], torch.ones(2000, 3))).all()  # constant target


def test_knn_separates_clusters_and_is_at_chance_on_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    centres = 5 * torch.randn(3, 16, generator=g)
    x = centres[labels] + torch.randn(300, 16, generator=g)
    assert knn_accuracy(x[:200], labels[:200], x[200:], labels[200:], k=5) == 1.0
    noise = torch.randn(300, 16, generator=g)
    assert knn_accuracy(noise[:200], labels[:200], noise[200:], labels[200:], k=5) < 0.6


def test_patch_fractions_hand_computed():
    onehot = torch.zeros(1, 4, 4, 4)
    onehot[0, :2] = 1  # the first half along axis 0
    onehot[0, 2, 0, 0] = 1
    frac = patch_fractions(onehot, 2)  # grid 2x2x2, raster order (axis 2 fastest)
    assert frac.shape == (8, 1)
    assert frac[:4, 0].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert frac[4:, 0].tolist() == [1 / 8, 0.0, 0.0, 0.0]


def test_probe_on_demo_phantoms(tmp_path):
    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=2, size=32, seed=1)
    task = get_task("ibsr")
    probe_set = build_probe_set(discover("ibsr", root), task, size=32, channels=["t1"])
    assert probe_set.fractions.shape == (2, 64, 3) and probe_set.brain.any()
    torch.manual_seed(0)
    metrics = make_probe(probe_set, k=3)(ASA(img_size=32, **PRESETS["tiny"]).eval())
    assert set(metrics) == {"probe/r2_CSF", "probe/r2_GM", "probe/r2_WM", "probe/r2_mean", "probe/knn_acc"}
    assert 0.0 <= metrics["probe/knn_acc"] <= 1.0 and metrics["probe/r2_WM"] <= 1.0
    with pytest.raises(ValueError, match="pretraining channels"):
        build_probe_set(discover("ibsr", root), task, size=32, channels=["flair"])
    from asa.data import RegionSource

    with pytest.raises(ValueError, match="source=label .*the probed encoder's region attention"):  # issue #20.1
        build_probe_set(discover("ibsr", root), task, size=32, channels=["t1"], regions=RegionSource("label"))


class _Switch(torch.nn.Module):
    """Stand-in segmenter declaring the zero_encoder_states() switch; the fake predictor reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.zeroed = False
        self.capabilities = Capabilities(zero_encoder=True)

    @contextlib.contextmanager
    def zero_encoder_states(self):
        self.zeroed = True
        try:
            yield self
        finally:
            self.zeroed = False


class _Oracle:
    """Predicts the reference exactly; with ``uses_encoder`` the zeroed network predicts background only."""

    units = 1  # one network (`asa.eval.predict.Predictor.units`)

    def __init__(self, cases, task, uses_encoder: bool, blank: bool = False) -> None:
        self.model, self.task, self.uses_encoder, self.blank = _Switch(), task, uses_encoder, blank
        self.truth = {}
        for case in cases:
            image, _ = preprocess_for_inference(case, task)
            from asa.data import load_volume

            target = task.label_to_target(load_volume(case.label, label=True).array.astype(np.int64))
            self.truth[image.sum().item()] = torch.nn.functional.one_hot(torch.as_tensor(target), task.num_outputs).permute(3, 0, 1, 2).float()

    def preprocess(self, case):
        return preprocess_for_inference(case, self.task)

    def __call__(self, image, **_):
        probs = self.truth[image.sum().item()]
        if (self.model.zeroed and self.uses_encoder) or self.blank:
            probs = torch.zeros_like(probs)
            probs[0] = 1
        return probs


@pytest.mark.parametrize("uses_encoder, drop", [(False, 0.0), (True, 1.0)])
def test_reliance_reports_the_drop(tmp_path, uses_encoder, drop):
    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=2, size=24, seed=2)
    cases, task = discover("ibsr", root), get_task("ibsr")
    result = encoder_reliance(_Oracle(cases, task, uses_encoder), cases)
    assert result["n_cases"] == 2
    for name in task.output_names:
        assert result["summary"][name]["normal"] == pytest.approx(1.0)
        assert result["summary"][name]["drop"] == pytest.approx(drop)
    assert result["summary"]["mean"]["drop"] == pytest.approx(drop)
    assert not any(k.startswith("HD95") for k in result["per_case"][0])  # only when asked


@pytest.mark.parametrize("blank, distance", [(False, 0.0), (True, EMPTY_HD95)])
def test_reliance_scores_hd95_as_asa_evaluate(tmp_path, blank, distance):
    """hd95=True: HD95 per class of the normal prediction, with asa-evaluate's empty-set convention
    (a prediction of background only against a present class: 373.13 mm)."""
    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=2, size=24, seed=2)
    cases, task = discover("ibsr", root), get_task("ibsr")
    result = encoder_reliance(_Oracle(cases, task, True, blank=blank), cases, hd95=True)
    for row in result["per_case"]:
        assert [row[f"HD95_{n}"] for n in task.output_names] == [distance] * len(task.output_names)
        assert row[f"Dice_{task.output_names[0]}"] == (0.0 if blank else 1.0)


def test_pretraining_probe_reads_a_labeled_folder_given_as_probe_data(tmp_path):
    """``asa-pretrain probe.data=<folder>``: the probe set comes from that folder (not the demo phantoms)."""
    from asa.api import load_config
    from asa.api.machinery.pretraining import _method, _probe

    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=3, size=32, seed=2)
    cfg = load_config("pretrain", "model=tiny", "data.crop=32", f"probe.data={root}", "probe.cases=2")
    method = _method(cfg)
    torch.manual_seed(0)
    net = method.build_network().eval()
    probe = _probe(cfg, method, method.probe_stride(net))  # the method gives the probe its stride and its tokens
    metrics = probe(net)
    assert set(metrics) == {"probe/r2_CSF", "probe/r2_GM", "probe/r2_WM", "probe/r2_mean", "probe/knn_acc"}
    missing = load_config("pretrain", "model=tiny", "data.crop=32", f"probe.data={tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="probe.data="):
        _probe(missing, _method(missing), 8)
