"""Options out of range are refused by name before any work (exit 2): asa-preprocess's workers and
data.store, the block puzzles' settings, the network settings where they are declared."""

from __future__ import annotations

from pathlib import Path

import pytest

from asa.api import preprocess
from asa.api.config import compose_config
from asa.cli.common import EXIT_REFUSED, entry


def _refused(app: str, job, overrides: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        entry(app, job, compose_config(app.removeprefix("asa-"), overrides))
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_REFUSED, err
    return err


def _store_options(tmp_path: Path, store: Path, *extra: str) -> list[str]:
    return ["data=demo", "data.demo.cases=2", "data.demo.size=32", f"data.demo.cache_dir={tmp_path / 'cache'}",
            f"data.store={store}", "progress=false", *extra]


def test_preprocess_refuses_negative_workers(tmp_path, capsys):
    err = _refused("asa-preprocess", preprocess, _store_options(tmp_path, tmp_path / "store", "workers=-1"), capsys)
    assert "workers=-1: expected 0 (one process per CPU core, at most 8) or a number of processes" in err
    assert not (tmp_path / "store").exists() and not (tmp_path / "cache").exists()


def test_preprocess_refuses_a_file_as_the_store(tmp_path, capsys):
    (tmp_path / "store").write_text("a file")
    err = _refused("asa-preprocess", preprocess, _store_options(tmp_path, tmp_path / "store", "workers=1"), capsys)
    assert f"data.store={tmp_path / 'store'} is a file; expected the store folder to write" in err
    assert (tmp_path / "store").read_text() == "a file"


def _pretrain(tmp_path: Path, *extra: str) -> list[str]:
    return ["model=tiny", "trainer=smoke", "data.demo.cases=2", "data.demo.size=32",
            f"data.demo.cache_dir={tmp_path / 'cache'}", "device=cpu", "probe.every=0",
            f"output_dir={tmp_path / 'run'}", *extra]


def test_a_jigsaw_with_nothing_to_learn_is_refused(tmp_path, capsys):
    from asa.api import pretrain

    err = _refused("asa-pretrain", pretrain, _pretrain(tmp_path, "experiment=jigsaw", "data.crop=32", "method.grid=2",
                                                       "method.permutations=1"), capsys)
    assert "method.permutations=1: a jigsaw with fewer than 2 permutations has nothing to learn" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, message", [
    (["model.num_heads=0"], "model.num_heads=0: expected an integer >= 1"),
    (["model=sa_swin", "model.window_size=-1"], "model.window_size=-1: expected an integer >= 1"),
    (["model.lr_axis=3"], "model.lr_axis=3: expected an integer in [0, 2] or null"),
    (["model=unetr", "model.hidden_size=0"], "model.hidden_size=0: expected an integer >= 1"),
    (["model=swin_unetr", "model.drop_rate=1.5"], "model.drop_rate=1.5: expected a number in [0.0, 1.0]"),
])
def test_network_settings_out_of_range_are_refused_naming_the_key(tmp_path, capsys, overrides, message):
    from asa.api import finetune

    err = _refused("asa-finetune", finetune, ["trainer=smoke", "device=cpu", f"output_dir={tmp_path / 'run'}",
                                              *overrides], capsys)
    assert message in err and not (tmp_path / "run").exists()


def test_pretraining_encoder_sizes_are_range_checked(tmp_path, capsys):
    from asa.api import pretrain

    err = _refused("asa-pretrain", pretrain, _pretrain(tmp_path, "model.depth=0"), capsys)
    assert "model.depth=0: expected an integer >= 1" in err


def test_another_networks_preset_under_model_arch_points_to_its_preset(tmp_path, capsys):
    from asa.api import finetune

    err = _refused("asa-finetune", finetune, ["model=tiny", "model.arch=unetr", f"output_dir={tmp_path / 'run'}"],
                   capsys)
    assert "model.arch=unetr: the model section holds another network's options (model.patch_size," in err
    assert "choose the network with model=unetr instead of model.arch" in err
    assert "model.patch_size=8: model arch" not in err  # not blamed on a key the user never typed


@pytest.mark.parametrize("name, override, message", [
    ("finetune", "model.foo=1", "Could not override 'model.foo'. Key 'foo' is not in struct — the network the model "
                                "preset builds (model.arch) has no option foo"),
    ("pretrain", "data.size=32", "Could not override 'data.size'. Key 'size' not in 'PretrainDataConfig' — data.size is "
                                 "now data.crop"),
])
def test_load_config_gives_the_console_scripts_hints(name, override, message):
    from asa.api import load_config

    with pytest.raises(ValueError) as err:
        load_config(name, override)
    assert str(err.value).startswith(message) and "To append to your config" not in str(err.value)


@pytest.mark.parametrize("app, overrides, message", [
    ("asa-finetune", ["task.samples_per_case=0"], "task.samples_per_case=0: expected an integer >= 1"),
    ("asa-finetune", ["task.samples_per_case=-2"], "task.samples_per_case=-2: expected an integer >= 1"),
    ("asa-finetune", ["task.focal_weight=-1"], "task.focal_weight=-1.0: expected a number >= 0.0"),
    ("asa-pretrain", ["method.bins=0"], "method.bins=0: expected an integer >= 1"),
    ("asa-pretrain", ["model=resenc", "model.size=tiny", "model.mirror_visible=1.5"],
     "model.mirror_visible=1.5: expected a number in [0.0, 1.0] or null"),
    ("asa-pretrain", ["model=resenc", "model.size=tiny", "method.mask_ratio=1.2"], "method.mask_ratio must lie in (0, 1), got 1.2"),
    ("asa-pretrain", ["model=resenc", "model.size=tiny", "model.mirror_visible=0.9"],
     "model.mirror_visible=0.9: at mask_ratio 0.75 at most 0.333 of the masked blocks can keep a visible mirror"),
    # the residual-encoder options are declared once for both trees (ResEncOptions): the same check as fine-tuning's
    ("asa-pretrain", ["model=resenc", "model.size=tiny", "model.lr_axis=3"],
     "model.lr_axis=3: expected an integer in [0, 2]"),
])
def test_task_and_method_options_are_refused_by_name_before_anything_is_written(tmp_path, capsys, app, overrides,
                                                                                 message):
    """These used to stop with exit 1 after the run folder was written (samples_per_case: an AttributeError)
    or to name the option without its section."""
    from asa.api import finetune, pretrain

    if app == "asa-pretrain":
        err = _refused(app, pretrain, _pretrain(tmp_path, "data.crop=32", *overrides), capsys)
    else:
        err = _refused(app, finetune, ["trainer=smoke", "device=cpu", f"output_dir={tmp_path / 'run'}", *overrides],
                       capsys)
    assert message in err and not (tmp_path / "run").exists()


def test_a_pretraining_only_option_in_fine_tuning_points_to_asa_pretrain():
    """model.mask_block is the masked twin's (asa-pretrain model=resenc); fine-tuning's ResEnc has no mask."""
    from asa.api import load_config

    with pytest.raises(ValueError) as err:
        load_config("finetune", "model=resenc", "model.mask_block=8")
    assert str(err.value).endswith("has no option mask_block; its options are the fields of its settings "
                                   "(asa.models.NetworkSettings); mask_block is an option of asa-pretrain's "
                                   "model=resenc")


@pytest.mark.parametrize("key", ["coord_channel", "mirror_visible", "mask_block", "densify", "weight_patch",
                                 "weight_power"])
def test_a_masking_option_under_method_is_refused_naming_its_place_in_the_model_section(key):
    from asa.api import load_config

    with pytest.raises(ValueError, match=rf"method.{key} is now model.{key} \(with model=resenc\)"):
        load_config("pretrain", "model=resenc", f"method.{key}=null")


def test_a_training_set_too_small_for_one_step_is_refused_before_the_folder_is_written(old_run):
    """3 training cases at batch 4 (as 3 cases on 2 ranks at batch 2): exit 2 before config.yaml and splits.json
    (it used to stop with exit 1 inside the engine, after both were written)."""
    from asa.api.machinery.run import OptionError

    with pytest.raises(OptionError, match=r"^data: training set too small: 3 samples give 3 per rank \(world_size=1\), "
                                          r"fewer than trainer.batch_size × trainer.accum_steps = 4$"):
        old_run.train(1, False, "trainer.batch_size=4")
    assert not old_run.dir.exists()
