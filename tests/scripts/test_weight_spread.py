"""scripts/weight_spread.py reads the attentive weight's spread on the crops asa-pretrain trains on: inside the brain
(a 32³ crop of 48³ subjects) it is nearly uniform, at the whole head it varies, and γ sharpens it."""

from __future__ import annotations

import pytest

pytest.importorskip("nilearn")  # the template anatomy (the anatomy extra)
weight_spread = pytest.importorskip("scripts.weight_spread")


def test_the_weight_varies_at_the_whole_head_and_not_inside_the_brain():
    rows = weight_spread.main(["--geometry", "48:32", "48:48", "--subjects", "2", "--masks", "2"])
    cv = {(r["crop"], r["weighting"]): r["cv"] for r in rows}
    default, sharp = "per 8³ unit, 16³ blocks (paper's granularity)", "per 8³ unit, 16³ blocks, γ = 4"
    assert all(r["placement"] == "pipeline" for r in rows)
    assert cv[(32, default)] < 0.3 < 0.6 < cv[(48, default)]
    for crop in (32, 48):
        assert cv[(crop, sharp)] > 1.4 * cv[(crop, default)]
