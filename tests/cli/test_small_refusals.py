"""Issue 74's smaller rows: an empty ``data.root=`` / ``data.store=``, a study folder that cannot be written and a
checkpoint of the other kind of run given to ``resume=`` are refused (exit 2, one line naming the option or the
file, nothing written); a skipped case's warning does not point at a ``bad_cases.json`` that a refused run never
writes."""
from __future__ import annotations


import pytest

from asa.api import finetune, preprocess, pretrain
from asa.api.config import compose_config
from asa.api.machinery.rundir import prepare_run_dir
from asa.cli.common import EXIT_REFUSED, entry
from asa.data import write_demo_dataset
from asa.io import save_checkpoint
from asa.models.family import masked_network
from asa.train import IncompatibleCheckpointError
from asa.train.checkpoint import FORMAT
from asa.train.distributed import DistEnv



def _one_refusal(app: str, run, cfg, capsys) -> tuple[str, str]:
    """(the one line of ``app``'s refusal, all it wrote on stderr)."""
    with pytest.raises(SystemExit) as stop:
        entry(app, run, cfg)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"[{app}]")]
    assert stop.value.code == EXIT_REFUSED and len(lines) == 1, lines
    return lines[0], err


@pytest.mark.parametrize("app, run, name, overrides, option", [
    ("asa-pretrain", pretrain, "pretrain", ["data=demo", "data.root="], "data.root"),
    ("asa-finetune", finetune, "finetune", ["data=brats", "data.root= "], "data.root"),
    ("asa-pretrain", pretrain, "pretrain", ["data=demo", "data.store="], "data.store"),
    ("asa-preprocess", preprocess, "preprocess", ["data=demo", "data.store="], "data.store"),
])
def test_an_empty_data_folder_is_refused_naming_the_option(tmp_path, monkeypatch, capsys, app, run, name, overrides,
                                                           option):
    monkeypatch.chdir(tmp_path)  # an empty path is the working folder: nothing may appear there
    out = [f"output_dir={tmp_path / 'run'}"] if name != "preprocess" else []
    line, _ = _one_refusal(app, run, compose_config(name, [*overrides, *out]), capsys)
    assert f"invalid option {option}=" in line and "empty" in line
    assert list(tmp_path.iterdir()) == []


def test_a_study_folder_that_cannot_be_written_is_refused_in_one_line(read_only, tmp_path, capsys):  # noqa: F811
    from asa.cli.study import main

    with pytest.raises(SystemExit) as stop:
        main(["--data", "ibsr", "--root", str(tmp_path / "none"), "--out", str(read_only / "study")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == EXIT_REFUSED and len(err) == 1
    assert err[0].startswith(f"[asa-study] refused: --out={read_only / 'study'}: cannot write there")


@pytest.mark.parametrize("app, config, says", [
    ("asa-finetune", {"method": {"name": "mae"}, "model": {"depth": 2}}, "a checkpoint of an asa-pretrain run"),
    ("asa-pretrain", {"task": {"name": "segmentation"}, "model": {"depth": 2}}, "a checkpoint of an asa-finetune run"),
])
def test_resuming_the_other_kind_of_run_says_which_the_file_is(tmp_path, app, config, says):
    arch = masked_network("swvit") if "method" in config else "swvit_unetr"
    other = save_checkpoint(tmp_path / "last.pt", {"format": FORMAT, "network": {"arch": arch, "kwargs": {}},
                                                   "config": config})
    out = tmp_path / "run"
    with pytest.raises(IncompatibleCheckpointError) as refusal:
        prepare_run_dir(out, app=app, resume=str(other), overwrite=False, run_config={"model": {"depth": 4}},
                        compat_keys=["model"], env=DistEnv())
    text = str(refusal.value)
    assert text.startswith(f"cannot resume from {other}: that file is {says}, and {app} resumes only its own runs")
    assert "<missing>" not in text and "model.depth" not in text
    assert not out.exists()


def test_a_refused_run_after_skipping_cases_never_claims_a_bad_cases_json(tmp_path, capsys):
    root = write_demo_dataset("bids", tmp_path / "bids", cases=3, size=16, seed=0)
    next(root.rglob("*.nii.gz")).write_bytes(b"not a nifti")
    out = tmp_path / "run"
    cfg = compose_config("pretrain", ["data=demo", f"data.root={root}", "model=tiny", "trainer=smoke", "device=cpu",
                                      f"output_dir={out}", "data.crop=16", "trainer.batch_size=8"])
    line, err = _one_refusal("asa-pretrain", pretrain, cfg, capsys)
    assert "training set too small" in line and not out.exists()
    warning = next(ln for ln in err.splitlines() if "warning: skipped 1 of 3 case(s)" in ln)
    assert "all listed in" not in warning and "lists them all once every check of the run has passed" in warning
