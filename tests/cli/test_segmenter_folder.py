"""asa-export of a fine-tuning checkpoint carries the whole segmenter: asa-predict checkpoint=<folder> writes
the very labels checkpoint=last.pt writes, and the card names the task, the training data, the test-split
metrics of the run and the command that made it. An encoder-only folder is refused by asa-predict."""

from __future__ import annotations

import pytest

from asa.api import evaluate, finetune, predict
from asa.api.config import compose_config
from asa.api.export import export_model
from asa.api.machinery.run import OptionError
from asa.cli.export import main as export_main
from asa.data import write_demo_dataset
from asa.io import load_volume


@pytest.mark.slow
def test_exported_segmenter_predicts_like_its_checkpoint(tmp_path, capsys):
    root = write_demo_dataset("brats", tmp_path / "data", cases=4, size=32, seed=5)
    run = tmp_path / "run"
    finetune(compose_config("finetune", [
        "data=brats", f"data.root={root}", "model=resenc", "model.size=tiny", "data.crop=32", "trainer=smoke", f"output_dir={run}",
        "device=cpu", "data.num_workers=0", "trainer.epochs=1", "trainer.amp=off"]))
    last = run / "checkpoints" / "last.pt"
    by_file = predict(compose_config("predict", [f"checkpoint={last}", f"input={root}", f"output={tmp_path / 'p1'}",
                                                 "device=cpu", "amp=off"]))
    evaluate(compose_config("evaluate", ["data=brats", f"data.root={root}", f"pred={tmp_path / 'p1'}",
                                         f"output={run / 'eval_test'}", f"split_file={run / 'splits.json'}",
                                         "subset=test"]))
    folder = tmp_path / "model"
    assert export_main([str(last), str(folder)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"wrote {folder}/: model.safetensors, config.json, README.md, "
                                                    "segmenter.pt, nnunet_pretrained_weights.pth, nnunet_plans.json, "
                                                    "checkpoint_final.pth, adaptation_plan.json")
    assert (folder / "segmenter.pt").is_file()
    card = (folder / "README.md").read_text()
    assert "## Segmenter" in card and "- task: brats" in card and "- training data: brats" in card
    # a public card and config.json name no folder of this machine: the data root by its last name only
    assert "- training data: brats at <local>/data" in card and str(tmp_path) not in card
    assert str(tmp_path) not in (folder / "config.json").read_text()
    # run from Python here: no command line, the function and config.yaml named (asa-finetune writes its command)
    assert "- command: `asa-finetune run from Python (asa.api.finetune) with the configuration in config.yaml`" in card
    assert '"eval_test"' in card and '"Dice"' in card  # the run's test-split summary under Metrics

    by_folder = predict(compose_config("predict", [f"checkpoint={folder}", f"input={root}",
                                                   f"output={tmp_path / 'p2'}", "device=cpu", "amp=off"]))
    assert sorted(p.name for p in by_folder) == sorted(p.name for p in by_file)
    for a, b in zip(sorted(by_file), sorted(by_folder)):
        assert (load_volume(a).array == load_volume(b).array).all(), a.name

    encoder_only = export_model(folder / "model.safetensors", tmp_path / "encoder_only")
    with pytest.raises(OptionError, match="no segmenter.pt: it carries a pretrained encoder only"):
        predict(compose_config("predict", [f"checkpoint={encoder_only}", f"input={root}",
                                           f"output={tmp_path / 'p3'}", "device=cpu"]))
