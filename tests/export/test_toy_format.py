"""A format for another tool is one file: the toy format below (each encoder tensor's shape and L2 norm, for a viewer
that shows one image channel) is declared and registered here, outside the package, with its own option, and
asa-export's own console entry offers its flag, writes it into the model folder of every encoder it takes, lists it,
adds its card section and replaces it with --overwrite; an encoder it does not take gets neither file nor section.
No line of asa/ names it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
import torch

import asa.formats.base
from asa.cli.common import EXIT_FINISHED
from asa.cli.export import main as export_main
from asa.api.export import export_model
from asa.api.machinery.run import OptionError
from asa.cli.export import build_parser
from asa.formats.base import ENCODER, Format, Job, Option, Part, formats, register_format
from asa.io import atomic_write_json, save_checkpoint
from asa.models import ASA, PRESETS, network_spec

TOY_FILE = "toy_norms.json"


class ToyNorms(Format):
    """``toy_norms.json``: {tensor: [shape, L2 norm]} of the encoder, for one-channel encoders only."""

    name, level, files = "toy-norms", ENCODER, (TOY_FILE,)
    options = (Option("toy_digits", "decimals of the toy norms (default: all)", int, metavar="N"),)

    def fault(self, spec: Mapping[str, Any]) -> str | None:
        channels = (spec.get("kwargs") or {}).get("in_channels", 1)
        return None if channels == 1 else f"a {channels}-channel encoder; the toy viewer shows one channel"

    def part(self, job: Job) -> Part:
        digits = job.options["toy_digits"]
        norms = {k: [list(v.shape), float(v.float().norm()) if digits is None else round(float(v.float().norm()), digits)]
                 for k, v in job.export["encoder"].items()}
        return Part({TOY_FILE: lambda path: atomic_write_json(path, norms)},
                    f"\n## Toy norms\n\n`{TOY_FILE}` holds the shape and norm of {len(norms)} encoder tensors.\n")


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(asa.formats.base, "_FORMATS", dict(formats()))  # the registration ends with the test
    return register_format(ToyNorms())


def _checkpoint(path, in_channels: int) -> ASA:
    torch.manual_seed(0)
    mae = ASA(img_size=32, in_channels=in_channels, **PRESETS["tiny"]).eval()
    save_checkpoint(path, {"model": mae.state_dict(), "network": network_spec(mae), "step": 3})
    return mae


def test_a_format_registered_outside_asa_goes_through_asa_export(toy, tmp_path, capsys):
    mae = _checkpoint(tmp_path / "last.pt", in_channels=1)
    out = tmp_path / "model"
    assert export_main([str(tmp_path / "last.pt"), str(out)]) == EXIT_FINISHED
    assert capsys.readouterr().out.strip().endswith(f"wrote {out}/: model.safetensors, config.json, README.md, "
                                                    f"{TOY_FILE}")
    norms = json.loads((out / TOY_FILE).read_text())
    encoder = {k: v for k, v in mae.state_dict().items() if k.startswith("encoder.")}
    assert norms.keys() == encoder.keys()
    assert all(norms[k][0] == list(v.shape) and norms[k][1] == pytest.approx(float(v.norm())) for k, v in encoder.items())
    card = (out / "README.md").read_text()
    assert card.endswith(f"\n## Toy norms\n\n`{TOY_FILE}` holds the shape and norm of {len(encoder)} encoder "
                         "tensors.\n")
    # asa-export knows the toy's file as its own: --overwrite moves it aside with the rest
    assert export_main([str(tmp_path / "last.pt"), str(out), "--overwrite"]) == EXIT_FINISHED
    aside = next(tmp_path.glob("model.replaced-*"))
    assert sorted(p.name for p in aside.iterdir()) == sorted(["README.md", "config.json", "model.safetensors", TOY_FILE])


def test_an_encoder_the_format_does_not_take_gets_neither_file_nor_section(toy, tmp_path):
    _checkpoint(tmp_path / "last.pt", in_channels=2)
    assert toy.fault(network_spec(ASA(img_size=32, in_channels=2, **PRESETS["tiny"]))) is not None
    assert export_main([str(tmp_path / "last.pt"), str(tmp_path / "model")]) == EXIT_FINISHED
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "## Toy norms" not in (tmp_path / "model" / "README.md").read_text()


def test_a_second_format_under_a_taken_name_file_or_option_is_refused(toy):
    with pytest.raises(ValueError, match="format 'toy-norms' is registered already"):
        register_format(ToyNorms())
    other = ToyNorms()
    other.name = "toy-copy"
    with pytest.raises(ValueError, match=f"format 'toy-copy': {TOY_FILE} is written by another format"):
        register_format(other)
    other.files = ("toy_copy.json",)
    with pytest.raises(ValueError, match="format 'toy-copy': --toy-digits is another format's option"):
        register_format(other)


def test_the_format_s_own_option_is_a_flag_of_asa_export_and_a_keyword_of_export_model(toy, tmp_path):
    assert "--toy-digits N" in build_parser().format_help()
    _checkpoint(tmp_path / "last.pt", in_channels=1)
    assert export_main([str(tmp_path / "last.pt"), str(tmp_path / "a"), "--toy-digits", "1"]) == EXIT_FINISHED
    norms = json.loads((tmp_path / "a" / TOY_FILE).read_text())
    assert all(norm == round(norm, 1) for _, norm in norms.values())
    export_model(tmp_path / "last.pt", tmp_path / "b", toy_digits=1)
    assert json.loads((tmp_path / "b" / TOY_FILE).read_text()) == norms
    with pytest.raises(OptionError, match="no format reads the option 'toy_digit'"):
        export_model(tmp_path / "last.pt", tmp_path / "c", toy_digit=1)
    with pytest.raises(OptionError, match="--toy-digits: options of the model folder's toy-norms files, which --format "
                                          "nnunet-results does not write"):
        export_model(tmp_path / "last.pt", tmp_path / "c", format="nnunet-results", toy_digits=1)
