"""The masked twin's contract (`asa.models.twin`): every family's twin keeps it, and a twin that does not is
refused, in one line, when its family or it registers."""

from __future__ import annotations

from dataclasses import make_dataclass

import pytest
import torch
from torch import nn

from asa.models import register_network
from asa.models.family import Family, families, register_family
from asa.models.registry import FAMILIES, RECORDS
from asa.models.twin import MaskedOutput, twin_class, twin_fault


def _settings() -> type:
    """A family's pretraining model section (a dataclass)."""
    return make_dataclass("TwinSettings", [("arch", str, "x")])


class _NoOutput(nn.Module):
    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        return x


class _Twin(nn.Module):
    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> MaskedOutput:
        zero = x.sum() * 0
        return MaskedOutput(zero, x, torch.ones(1, 1), torch.ones(1, 1))


def _unannotated(**kwargs):
    return _Twin()


def _annotated(**kwargs) -> _Twin:
    return _Twin()


def test_every_family_twin_keeps_the_contract():
    twins = {name: f.masked for name, f in families().items() if f.masked}
    assert {"swvit", "resenc"} <= set(twins)
    for twin in twins.values():
        assert twin_fault(RECORDS[twin].builder) is None
    assert twin_class(RECORDS["resenc_pretrain"].builder).check_options is not None  # its refusals, typed


@pytest.mark.parametrize("builder, why", [
    (_NoOutput, r"_NoOutput.forward returns 'Tensor', not an asa.models.twin.MaskedOutput"),
    (_unannotated, r"its builder '_unannotated' names no nn.Module class"),
])
def test_a_twin_without_the_contract_is_refused_when_its_family_registers(builder, why):
    register_network("test_bad_twin", kind="pretraining")(builder)
    try:
        with pytest.raises(TypeError, match=r"^network family 'test_bad': its masked twin 'test_bad_twin' is "
                                            r"refused: " + why):
            register_family(Family("test_bad", masked="test_bad_twin", pretrain_settings=_settings()))
        assert "test_bad" not in FAMILIES
    finally:
        RECORDS.pop("test_bad_twin", None)


def test_a_twin_registered_after_its_family_is_checked_then():
    register_family(Family("test_late", masked="test_late_twin", pretrain_settings=_settings()))
    try:
        with pytest.raises(TypeError, match=r"^network family 'test_late': its masked twin 'test_late_twin' is refused"):
            register_network("test_late_twin", kind="pretraining", family="test_late")(_NoOutput)
        assert "test_late_twin" not in RECORDS
        register_network("test_late_twin", kind="pretraining", family="test_late")(_annotated)  # kept: registered
    finally:
        RECORDS.pop("test_late_twin", None)
        FAMILIES.pop("test_late", None)


def test_check_options_hung_on_the_builder_function_is_refused_naming_its_place():
    def builder(**kwargs) -> _Twin:
        return _Twin()

    builder.check_options = lambda **_: None  # type: ignore[attr-defined]
    assert "a static method of the twin's class now" in twin_fault(builder)


def test_the_outputs_units_are_the_mask_unless_the_twin_weighs_finer_ones():
    from asa.models.cnn.masked import ResEncMAEOutput
    mask, finer = torch.ones(1, 2), torch.ones(1, 16)
    assert MaskedOutput(torch.zeros(()), mask, mask, mask).units is mask
    assert ResEncMAEOutput(torch.zeros(()), mask, mask, finer, finer).units is finer
