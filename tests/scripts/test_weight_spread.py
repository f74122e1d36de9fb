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


def test_the_grid_reads_both_networks_and_the_study_s_asa_unit_varies_inside_the_brain():
    """Both networks weigh by the same Ḡ per unit, so at one unit and γ they agree (their masks differ); inside the
    brain the paper's 8³ unit is near uniform and the study's asa arm (4³ units, γ = 4) is not."""
    rows = weight_spread.main(["--network", "resenc", "swvit", "--units", "4", "8", "--powers", "1", "4",
                               "--geometry", "48:32", "--subjects", "2", "--masks", "2"])
    got = {(r["network"], r["unit"], r["power"]): r for r in rows}
    assert len(got) == 8
    for unit in (4, 8):
        for power in (1.0, 4.0):
            assert abs(got[("resenc", unit, power)]["cv"] - got[("swvit", unit, power)]["cv"]) < 0.1
    assert got[("resenc", 8, 1.0)]["effective_share"] > 0.9
    assert got[("resenc", 4, 4.0)]["effective_share"] < 0.8
    assert got[("resenc", 4, 4.0)]["units_masked"] == 6 * 64  # 6 of 8 16³ blocks masked, 64 units each
