"""``data.channels``: a segmentation task read on some of its image channels (the T1 of a 4-channel BraTS set). The
network takes that many channels, the checkpoint's task records them, asa-predict reads them alone from cases holding
more, asa-preprocess writes a store of them; a channel the task lacks, one named twice, the case task and asa-probe
refuse it naming the option."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from asa.api import finetune, predict, preprocess, probe
from asa.api.config import compose_config
from asa.api.tasks.segmentation import reading_channels
from asa.data import get_task, write_demo_dataset
from asa.data.store import open_store
from asa.io import load_checkpoint

SMOKE = ["model=tiny", "data.crop=32", "trainer=smoke", "trainer.max_steps=1", "trainer.panel_every=0", "device=cpu",
         "data.num_workers=0", "trainer.amp=off"]


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    return write_demo_dataset("brats", tmp_path_factory.mktemp("brats") / "data", cases=4, size=32, seed=2)


def test_the_task_reads_the_named_channels_in_their_order():
    brats = get_task("brats")
    assert reading_channels(brats, None, where="x") is brats
    assert reading_channels(brats, ["FLAIR", "t1"], where="x").channels == ("flair", "t1")  # the task's names
    assert reading_channels(brats, ["t1"], where="x").num_outputs == brats.num_outputs
    for wrong, said in ((["t3"], "'t3': no such channel"), (["t1", "T1"], "name each channel to read once"),
                        ([], "at least one")):
        with pytest.raises(ValueError, match=said) as err:
            reading_channels(brats, wrong, where="the brats task")
        assert "data.channels=" in str(err.value)


@pytest.mark.slow  # a pipeline: fine-tuning and prediction (8 CPU-s)
def test_a_run_on_the_t1_alone_is_a_one_channel_network_and_predicts_from_four_channel_cases(brats, tmp_path):
    run = tmp_path / "t1"
    result = finetune(compose_config("finetune", ["data=brats", f"data.root={brats}", "data.channels=[t1]",
                                                  f"output_dir={run}", *SMOKE]))
    assert result.step == 1
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert list(ckpt["config"]["outputs"]["channels"]) == ["t1"]  # the task asa-predict rebuilds
    assert ckpt["network"]["kwargs"]["in_channels"] == 1
    assert ckpt["model"]["encoder.patch_embed.proj.weight"].shape[1] == 1  # the encoder reads one channel

    # the checkpoint's task reads the T1 of each 4-channel case: the other channels replaced by noise, the same labels
    cases = sorted(p for p in brats.iterdir() if p.is_dir())[:2]
    rng = np.random.default_rng(0)
    outputs = {}
    for name in ("clean", "noisy"):
        for case in cases:
            shutil.copytree(case, tmp_path / name / case.name)
        for path in (tmp_path / name).rglob("*.nii.gz"):
            if name == "noisy" and not path.name.endswith(("_t1.nii.gz", "_seg.nii.gz")):
                image = nib.load(path)
                nib.save(nib.Nifti1Image(rng.normal(size=image.shape).astype(np.float32), image.affine), path)
        outputs[name] = sorted(predict(compose_config("predict", [
            f"checkpoint={run / 'checkpoints' / 'last.pt'}", f"input={tmp_path / name}",
            f"output={tmp_path / f'pred-{name}'}", "device=cpu", "amp=off"])))
    assert [p.name for p in outputs["clean"]] == [p.name for p in outputs["noisy"]] and len(outputs["clean"]) == 2
    for a, b in zip(outputs["clean"], outputs["noisy"]):
        assert np.array_equal(np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj))


def test_a_store_of_the_named_channels_is_written_and_read(brats, tmp_path):
    store = tmp_path / "store"
    preprocess(compose_config("preprocess", ["data=brats", f"data.root={brats}", "data.channels=[t1]",
                                             f"data.store={store}", "workers=1", "progress=false"]))
    assert open_store(store).settings["channels"] == ["t1"]
    common = ["data=brats", f"data.root={brats}", f"data.store={store}", *SMOKE]
    assert finetune(compose_config("finetune", [*common, "data.channels=[t1]", f"output_dir={tmp_path / 'a'}"])).step == 1
    with pytest.raises(Exception, match="channels"):  # all four channels from a store of the T1: refused, said
        finetune(compose_config("finetune", [*common, f"output_dir={tmp_path / 'b'}"]))


def test_the_case_task_and_the_probes_refuse_it(brats, tmp_path):
    with pytest.raises(ValueError, match="data.task=case reads each case's T1 alone"):
        finetune(compose_config("finetune", ["data=targets", "data.channels=[t1]", f"output_dir={tmp_path / 'c'}",
                                             *SMOKE]))
    with pytest.raises(ValueError, match=r"set channels=\['t1'\] instead"):
        probe(compose_config("probe", ["encoders=[random]", "data=brats", f"data.root={brats}", "data.channels=[t1]",
                                       f"output={tmp_path / 'p'}", "device=cpu"]))
