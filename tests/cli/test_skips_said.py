"""Every skip is said on the console with its count and recorded in the outputs; predictions with
label values the task does not have are refused rather than scored."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from asa.api import evaluate
from asa.api.config import compose_config, load_config
from asa.api.machinery.dataset import load_cases, write_bad_cases
from asa.api.machinery.run import OptionError
from asa.data import discover, write_demo_dataset
from asa.train.distributed import DistEnv


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    return write_demo_dataset("brats", tmp_path_factory.mktemp("skips") / "brats", cases=3, size=16, seed=0)


def _predictions(root, out, skip=()):
    """The reference labels themselves as predictions (Dice 1), leaving out the cases in ``skip``."""
    out.mkdir()
    for case in discover("brats", root):
        if case.id not in skip:
            shutil.copy(case.label, out / f"{case.id}.nii.gz")
    return out


def test_bad_cases_skipped_are_said_with_their_count(brats, tmp_path, capsys):
    root = tmp_path / "brats"
    shutil.copytree(brats, root)
    bad = sorted(root.iterdir())[1]
    (bad / f"{bad.name}_t2.nii.gz").write_bytes(b"not a nifti")
    data = load_config("finetune", "data=brats", f"data.root={root}", "data.on_bad_case=skip").data
    cases, record = load_cases(data, tmp_path, DistEnv())
    assert len(cases) == 2
    err = capsys.readouterr().err
    assert "skipped 1 of 3 case(s)" in err and bad.name in err and str(tmp_path / "bad_cases.json") in err
    assert not (tmp_path / "bad_cases.json").exists()  # written by the job once every check passed
    write_bad_cases(tmp_path, record)
    assert [s["id"] for s in json.loads((tmp_path / "bad_cases.json").read_text())["skipped"]] == [bad.name]
    assert json.loads((tmp_path / "bad_cases.json").read_text())["kept"] == 2


def test_on_missing_skip_is_printed_and_recorded_in_the_summary(brats, tmp_path, capsys):
    left_out = sorted(p.name for p in brats.iterdir())[0]
    preds = _predictions(brats, tmp_path / "pred", skip={left_out})
    summary = evaluate(compose_config("evaluate", ["data=brats", f"data.root={brats}", f"pred={preds}",
                                                   f"output={tmp_path / 'eval'}", "on_missing=skip"]))
    assert summary["n_cases"] == 2 and summary["n_expected"] == 3
    written = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert [s["id"] for s in written["skipped"]] == [left_out] and written["n_expected"] == 3
    captured = capsys.readouterr()
    assert f"1 of 3 case(s) have no prediction" in captured.err and left_out in captured.err
    assert "2 of 3 case(s) scored" in captured.out


def test_predictions_with_foreign_label_values_are_refused(brats, tmp_path):
    preds = _predictions(brats, tmp_path / "pred")
    victim = sorted(preds.iterdir())[0]
    img = nib.load(victim)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0], data[1, 1, 1] = 3, 7  # not BraTS labels (0, 1, 2, 4)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), victim)
    with pytest.raises(OptionError, match=rf"{victim.name} holds label values \[3, 7\] that task brats does not have"):
        evaluate(compose_config("evaluate", ["data=brats", f"data.root={brats}", f"pred={preds}",
                                             f"output={tmp_path / 'eval'}"]))
    assert not (tmp_path / "eval").exists()
