"""The config tree: every option of every group composes with its entry point and builds its objects;
config mistakes fail at compose time naming the key; presets state only their differences."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
import yaml
from hydra.errors import HydraException
from omegaconf import OmegaConf

from asa.api import load_config
from asa.api.configuration.checks import as_config, validate
from asa.api.config import ENTRY_POINTS, compose_config, config_path
from asa.api.machinery.pretraining import _method
from asa.api.configuration.schema import PRETRAIN_MODELS, SCHEMAS
from asa.choices import check_choices
from asa.methods import MaskedAutoencoderSettings
from asa.models.cnn.masked import ResEncMaskedAutoencoder
from asa.api.machinery.networks import build_case_network, build_from_config
from asa.models import ASA, NETWORK_SETTINGS, PRESETS, SWIN_SIZES, SymmetryAwareHead, architectures
from asa.models import Family, registry
from asa.models.heads.puzzles import JigsawPuzzle, RelativePatchLocation
from asa.api.machinery.training import trainer_config
from asa.train import build_optimizer

PUZZLES = {"rpl": RelativePatchLocation, "jigsaw": JigsawPuzzle}
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GROUPS = ("model", "data", "optim", "trainer", "experiment")  # the groups of asa-pretrain and asa-finetune
EXPERIMENTS = {"mae": ("none", "uniform"), "a_ssl": ("none", "attentive"), "spe_ssl": ("mirror", "uniform"),
               "asa": ("mirror", "attentive")}


def options(entry: str, group: str) -> list[str]:
    """The presets of a group: the entry point's own files plus the shared ones ("_" files are bases)."""
    found = {p.stem for d in (CONFIGS / entry / group, CONFIGS / "common" / group) for p in d.glob("*.yaml")}
    return sorted(n for n in found if not n.startswith("_"))


CASES = [(entry, group, name) for entry in ("pretrain", "finetune") for group in GROUPS
         for name in options(entry, group)]
# options made for other networks than the default's: nnU-Net's recipe turns a CNN's deep supervision off
NEEDS = {("finetune", "optim", "nnunet"): ["model=dynunet"]}


@pytest.mark.parametrize("arch", sorted(NETWORK_SETTINGS))
def test_every_registered_network_is_a_model_option_at_its_defaults(arch):
    data = "data=targets" if arch in architectures("case") else "data=ibsr"
    model = load_config("finetune", f"model={arch}", data).model
    assert model.arch == arch
    if arch not in options("finetune", "model"):  # no preset file: the network's own defaults, nothing else
        assert model == NETWORK_SETTINGS[arch](arch=arch)


@dataclass
class _ToySection:  # asa-pretrain's model section of a masked twin registered in a test (a plug-in's, say)
    arch: str = "toy_family"
    width: int = 3


@pytest.fixture
def toy_masked_twin(monkeypatch):
    """A pretraining network declared the masked twin of the family ``toy_family``, gone after the test."""
    monkeypatch.setitem(registry.RECORDS, "toy_masked", registry.NetworkRecord(
        lambda **kwargs: None, "pretraining", "encoder", family="toy_family"))
    monkeypatch.setitem(registry.FAMILIES, "toy_family", Family("toy_family", masked="toy_masked",
                                                                 pretrain_settings=_ToySection))


def test_every_family_with_a_masked_twin_is_a_model_option_of_asa_pretrain_at_its_defaults(toy_masked_twin):
    assert as_config(compose_config("pretrain", ["model=toy_family", "model.width=5"]), "pretrain").model == _ToySection(
        width=5)
    with pytest.raises(HydraException, match="Could not find 'model/dynunet'") as info:  # fine-tuning's network only
        compose_config("pretrain", ["model=dynunet"])
    listed = {line.strip() for line in str(info.value).split("Available options in 'model':")[1].split("Config search")[0]
              .splitlines()} - {""}
    assert listed == {*options("pretrain", "model"), *PRETRAIN_MODELS}  # the files, and the declared families
    assert "toy_family" in listed and compose_config("finetune", ["model=dynunet"]).model.arch == "dynunet"
    with pytest.raises(HydraException, match="Could not find 'model/toy_family'"):  # pretraining's only
        compose_config("finetune", ["model=toy_family"])


def test_groups_are_complete():
    # preset files: the SW-ViT sizes; every other network is model=<arch> at its settings' defaults, stored
    assert options("pretrain", "model") == ["base", "small", "tiny"]
    assert options("finetune", "model") == ["base", "small", "tiny"]
    assert {"adni", "demo", "oasis"} <= set(options("pretrain", "data"))
    assert options("finetune", "data") == ["brats", "ibsr", "msd", "targets", "wmh"]
    assert options("pretrain", "experiment") == sorted(
        [*EXPERIMENTS, "focal_region", "rat_asa", "rat_msa", "asa_saca", "sa_swin",
         "rpl", "jigsaw"])  # + RAT parts, SA-Swin/SACA, Taleb's block puzzles
    assert options("finetune", "experiment") == ["asa_saca", "baseline", "spe_only"]
    for entry in ("pretrain", "finetune"):
        assert {"default", "paper", "smoke"} <= set(options(entry, "trainer"))


def _build(entry: str, composed) -> None:
    """Build what the entry point builds from this config (typed, as the jobs see it): the network
    (at a small input size), the optimiser over it and the engine settings."""
    cfg = as_config(composed, entry)
    model = cfg.model if isinstance(cfg.model, dict) else asdict(cfg.model)
    if entry == "pretrain":
        cfg.data.crop = 48 if cfg.method.name in PUZZLES else 32  # puzzles: 3 cells of 16 voxels, 1-patch blocks
        net = _method(cfg).build_network()  # the configured method's network
        masked = ResEncMaskedAutoencoder if model.get("arch") == "resenc" else ASA
        assert isinstance(net, {"sa_swin": SymmetryAwareHead, **PUZZLES}.get(cfg.method.name, masked))
    elif model.get("arch") in architectures("case"):  # a case network (data.task=case): pooled tokens, an MLP
        net = build_case_network(model, in_channels=1, out_channels=2, crop=32, default_crop=32)
    else:
        size = 64 if model.get("arch") in ("swin_unetr", "sa_swin") else 32  # SwinUNETR downsamples by 32
        net = build_from_config(model, asdict(cfg.segmenter), in_channels=1, out_channels=2, crop=size)
    opt = cfg.optim
    extra = {k: getattr(opt, k) for k in ("momentum", "nesterov") if getattr(opt, k) is not None}
    optimizer = build_optimizer(net, name=opt.name, lr=float(opt.base_lr), weight_decay=float(opt.weight_decay),
                                **extra)
    trainable = [p for p in net.parameters() if p.requires_grad]  # resenc: the heads no loss reads are frozen
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)
    config = trainer_config(cfg)
    assert (config.schedule, config.num_workers) == (opt.schedule, cfg.data.num_workers)  # from optim and data
    assert not {"schedule", "num_workers"} & set(asdict(cfg.trainer))  # stated once, in their own groups


@pytest.mark.parametrize("entry, group, name", CASES, ids=[f"{e}-{g}={n}" for e, g, n in CASES])
def test_every_option_composes_and_builds(entry, group, name):
    overrides = [f"{group}={name}"] + (["data.root=/some/root"] if group == "data" else [])
    overrides += NEEDS.get((entry, group, name), [])
    cfg = compose_config(entry, overrides)
    validate(cfg, entry)
    _build(entry, cfg)


def test_encoder_presets_match_the_python_presets():
    for name, sizes in PRESETS.items():
        pre = compose_config("pretrain", [f"model={name}"]).model
        fine = compose_config("finetune", [f"model={name}"]).model
        assert {k: pre[k] for k in sizes} == sizes
        encoder = {k: v for k, v in sizes.items() if not k.startswith("decoder_")}
        assert {k: fine[k] for k in encoder} == encoder and fine.arch == "swvit_unetr"
        assert not any(k.startswith("decoder_") for k in fine)


def test_swin_presets_match_the_python_sizes():
    """The SwinViT sizes are stated once (`asa.models.SWIN_SIZES`): the Swin networks' presets and SA-Swin's
    pretraining default to them, so its encoder export loads into model=sa_swin|swin_case unchanged."""
    sizes = {k: list(v) if isinstance(v, tuple) else v for k, v in SWIN_SIZES.items()}
    for name in ("swin_unetr", "sa_swin", "swin_case"):
        model = compose_config("finetune", [f"model={name}"]).model
        assert {k: model[k] for k in sizes} == sizes and model.arch == name
    method = compose_config("pretrain", ["experiment=sa_swin"]).method
    assert {k: method[k] for k in sizes} == sizes


@pytest.mark.parametrize("entry, overrides, key", [
    ("pretrain", ["trainer.epocs=3"], "trainer.epocs"),           # a typo
    ("finetune", ["trainer.epochs=ten"], "trainer.epochs"),        # a wrong type
    ("pretrain", ["method.mask_ratio=lots"], "method.mask_ratio"),
    ("finetune", ["segmenter.pos_mdoe=mirror"], "segmenter.pos_mdoe"),
    ("predict", ["checkpoint=c", "input=i", "output=o", "sw_batch_size=[2]"], "sw_batch_size"),
    ("evaluate", ["pred=p", "output=o", "data.patch=3"], "data.patch"),
])
def test_config_mistakes_fail_at_compose_time_naming_the_key(entry, overrides, key):
    with pytest.raises(HydraException) as info:
        compose_config(entry, overrides)
    assert key in f"{info.value} {info.value.__cause__}"


@pytest.mark.parametrize("entry, overrides, option", [
    ("pretrain", ["experiment=baseline"], "experiment/baseline"),  # a fine-tuning row
    ("pretrain", ["data=brats"], "data/brats"),
    ("finetune", ["experiment=mae"], "experiment/mae"),            # a pretraining row
    ("pretrain", ["model=unetr"], "model/unetr"),                  # a fine-tuning network: not an option here
    ("finetune", ["data=demo"], "data/demo"),
    ("finetune", ["optim=adamw_demo"], "optim/adamw_demo"),
])
def test_presets_of_the_other_entry_point_are_refused(entry, overrides, option):
    with pytest.raises(HydraException, match=option):
        compose_config(entry, overrides)



CHOICE_MISTAKES = [  # (entry, key, bad value, the allowed values the message must list)
    ("pretrain", "model.pos_mode", "mirrror", "mirror, paper, none"),
    ("pretrain", "method.loss_weighting", "atentive", "attentive, uniform, focal_region"),
    ("pretrain", "method.normalize", "l1", "l2, none"),
    ("pretrain", "model.saca", "decoderr", "none, decoder, encoder, all"),
    ("pretrain", "model.region_attention", "alt", "none, alternate, all"),
    ("pretrain", "optim.schedule", "cosin", "cosine, poly, constant"),
    ("pretrain", "data.on_bad_case", "skp", "error, skip"),
    ("finetune", "model.pos_mode", "mirrror", "mirror, paper, none or null"),
    ("finetune", "model.spe_frame", "brian", "brain, crop"),
    ("finetune", "model.input_skip", "fulll", "full, none or a number in [0, 1]"),
    ("finetune", "model.input_skip", "1.5", "full, none or a number in [0, 1]"),
    ("finetune", "model.saca", "x", "none, decoder, encoder, all"),  # the free-form model group too
    ("finetune", "model.region_attention", "al", "none, alternate, all"),
    ("finetune", "data.regions.source", "clust", "auto, none, cluster, file, label"),
    ("finetune", "optim.name", "adam", "adamw, sgd"),
    ("predict", "amp", "fp61", "auto, fp16, bf16, off"),
    ("pretrain", "trainer.amp", "fp61", "auto, fp16, bf16, off"),  # the training loop's own settings
    ("finetune", "trainer.mode", "maximum", "min, max"),
    ("evaluate", "hd95", "pooledd", "max_directed, pooled"),
]
REQUIRED = {"predict": ["checkpoint=c", "input=i", "output=o"], "evaluate": ["pred=p", "output=o"]}


@pytest.mark.parametrize("entry, key, value, allowed", CHOICE_MISTAKES, ids=[f"{e}-{k}={v}" for e, k, v, _ in CHOICE_MISTAKES])
def test_a_value_outside_an_options_choices_names_the_key_and_the_choices(entry, key, value, allowed):
    cfg = compose_config(entry, [*REQUIRED.get(entry, []), f"{key}={value}"])  # the schema's types let it through
    with pytest.raises(ValueError) as info:
        validate(cfg, entry)
    shown = repr(cfg_value) if isinstance(cfg_value := OmegaConf.select(cfg, key), str) else cfg_value
    assert str(info.value).startswith(f"{key}={shown}: expected one of {allowed}")


@dataclass
class _Stage:  # a method's settings one level deeper than asa-pretrain keeps them
    method: MaskedAutoencoderSettings = field(default_factory=MaskedAutoencoderSettings)


@dataclass
class Moved:
    stage: _Stage = field(default_factory=_Stage)


def test_the_choices_of_a_nested_group_are_named_by_where_it_sits():
    """Declared once on the dataclass field: the dotted key follows wherever the group is placed."""
    cfg = OmegaConf.structured(Moved)
    check_choices(cfg, Moved)  # the defaults pass
    cfg.stage.method.normalize = "l3"
    with pytest.raises(ValueError, match=r"^stage\.method\.normalize='l3': expected one of l2, none$"):
        check_choices(cfg, Moved)


def test_added_keys_are_caught_by_validate():
    cfg = compose_config("pretrain", ["+trainer.epocs=3"])  # '+' appends past the schema...
    with pytest.raises(ValueError, match="trainer.epocs"):
        validate(cfg, "pretrain")  # ...and the entry point's own check refuses it


def test_trainer_presets_follow_their_entry_point():
    paper = compose_config("finetune", ["trainer=paper"])
    assert (paper.trainer.batch_size, paper.trainer.epochs, paper.trainer.warmup_epochs) == (2, 1000, 0)
    assert (paper.optim.schedule, paper.trainer.monitor, paper.trainer.mode) == ("poly", "val/dice", "max")
    default = compose_config("finetune", [])
    assert (default.trainer.monitor, default.trainer.mode) == ("val/dice", "max")  # in YAML, not set in code
    pre = compose_config("pretrain", ["trainer=paper"])
    assert (pre.trainer.batch_size, pre.trainer.epochs, pre.trainer.monitor) == (24, 400, "val/loss")


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_pretraining_experiments_state_only_their_differences(name):
    base = OmegaConf.to_container(compose_config("pretrain", []), resolve=True)
    cfg = OmegaConf.to_container(compose_config("pretrain", [f"experiment={name}"]), resolve=True)
    assert (cfg["model"]["pos_mode"], cfg["method"]["loss_weighting"]) == EXPERIMENTS[name]
    for group, key in (("model", "pos_mode"), ("method", "loss_weighting")):
        cfg[group].pop(key), base[group].pop(key)
    assert cfg == base


def test_symmetry_presets_state_only_their_differences():
    base = OmegaConf.to_container(compose_config("pretrain", []), resolve=True)
    saca = OmegaConf.to_container(compose_config("pretrain", ["experiment=asa_saca"]), resolve=True)
    assert saca["model"].pop("saca") == "encoder" and base["model"].pop("saca") == "none"
    assert saca == base
    sah = OmegaConf.to_container(compose_config("pretrain", ["experiment=sa_swin"]), resolve=True)
    assert sah["method"]["name"] == "sa_swin" and sah["trainer"]["batch_size"] >= 2
    fine = compose_config("finetune", ["experiment=asa_saca"])
    assert fine.model.saca == "encoder" and compose_config("finetune", []).model.saca == "none"
    assert compose_config("finetune", ["model=sa_swin"]).model.arch == "sa_swin"


def _package(path: Path, text: str) -> str:
    """The key prefix of a config file's values: global (an entry point's own file, ``# @package _global_``,
    a file of configs/common's top) or its group's name."""
    rel = path.relative_to(CONFIGS)
    if "# @package _global_" in text or len(rel.parts) == 2:
        return ""
    return f"{rel.parts[-2]}."


def _leaves(mapping: dict, prefix: str = ""):
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _stated(path: Path) -> dict[str, object]:
    """A config file's values by full key (its package's prefix), its base files' (``defaults``) first."""
    text = path.read_text()
    content = yaml.safe_load(text) or {}
    values: dict[str, object] = {}
    for item in content.get("defaults") or []:
        if isinstance(item, str) and (path.parent / f"{item}.yaml").is_file():
            values.update(_stated(path.parent / f"{item}.yaml"))
    values.update(_leaves({k: v for k, v in content.items() if k not in ("defaults", "hydra")}, _package(path, text)))
    return values


# every config file, with the entry points whose schema types it (configs/common serves asa-pretrain and asa-finetune)
CONFIG_FILES = [(entry, path.relative_to(CONFIGS).as_posix()) for entry in ENTRY_POINTS
                for path in sorted((CONFIGS / entry).rglob("*.yaml"))] + [
    (entry, path.relative_to(CONFIGS).as_posix()) for path in sorted((CONFIGS / "common").rglob("*.yaml"))
    for entry in ("pretrain", "finetune")]


def test_every_config_file_is_checked():
    files = {p for _, p in CONFIG_FILES}
    assert files == {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")}
    assert len(files) > 40


@pytest.mark.parametrize("entry, path", CONFIG_FILES, ids=[f"{e}:{p}" for e, p in CONFIG_FILES])
def test_configs_state_only_their_differences_from_the_schema(entry, path):
    """A key whose value is its schema default (or its base file's value) is left to them (the schema
    documents it), so that a default changes in one place. Two exceptions: keys of free-form groups
    (preprocess's data, a network's model keys that no schema types) are not defaults, and a preset may
    restate a default that a file of another group sets otherwise (experiment=sa_swin's batch of 2
    against trainer=paper's 24), since it then says which one wins. The data presets are also
    asa-preprocess's, whose data section is untyped until the job runs: there a key the preset leaves
    out cannot be overridden (``asa-preprocess data=demo data.resample_mm=2``), so they state every key."""
    if path.split("/")[1:2] == ["data"]:
        pytest.skip("a data preset: asa-preprocess's command line overrides only the keys it states")
    schema = OmegaConf.structured(SCHEMAS[entry])
    file = CONFIGS / path
    content = yaml.safe_load(file.read_text()) or {}
    base: dict[str, object] = {}
    for item in content.get("defaults") or []:
        if isinstance(item, str) and (file.parent / f"{item}.yaml").is_file():
            base.update(_stated(file.parent / f"{item}.yaml"))
    group = file.parent
    elsewhere: dict[str, list] = {}
    for other in (CONFIGS / entry).rglob("*.yaml"):
        if other.parent != group:
            for key, value in _stated(other).items():
                elsewhere.setdefault(key, []).append(value)
    restated = []
    for key, value in _leaves({k: v for k, v in content.items() if k not in ("defaults", "hydra")},
                              _package(file, file.read_text())):
        if key in base:
            default = base[key]
        else:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(schema, parent, default=None) if parent else schema
            if not OmegaConf.is_dict(node) or leaf not in node:
                continue  # not a typed field (a free-form group's key)
            default = "???" if OmegaConf.is_missing(node, leaf) else OmegaConf.to_container(node)[leaf]
        if value == default and all(v == value for v in elsewhere.get(key, [])):
            restated.append(f"{key}: {value}")
    assert restated == [], f"{path} restates defaults (its schema's or its base file's): leave them out"


@pytest.mark.parametrize("entry", ["predict", "probe", "evaluate"])
def test_the_defaults_of_the_jobs_without_groups_are_their_schemas(entry):
    cfg = OmegaConf.to_container(compose_config(entry, []), resolve=False)
    schema = OmegaConf.to_container(OmegaConf.structured(SCHEMAS[entry]), resolve=False)
    groups = ("data", "task")  # the config groups of evaluate and probe: a dataset preset, the task's settings
    assert {k: v for k, v in cfg.items() if k not in groups} == {k: v for k, v in schema.items() if k not in groups}


@pytest.mark.parametrize("experiment, pos_mode", [("baseline", "none"), ("spe_only", "mirror")])
def test_finetune_table4_rows(experiment, pos_mode):
    cfg = compose_config("finetune", [f"experiment={experiment}"])
    assert cfg.model.pos_mode == pos_mode and cfg.model.pretrained is None  # scratch rows


def test_segmentation_presets_share_one_base():
    brats = compose_config("finetune", ["data=brats"]).data
    ibsr = compose_config("finetune", ["data=ibsr"]).data
    assert (brats.demo.layout, ibsr.demo.layout) == ("brats", "ibsr")  # demo phantoms in the preset's layout
    assert list(ibsr.split.ratios) == [10, 2, 6] and list(brats.split.ratios) == [0.7, 0.1, 0.2]
    assert isinstance(ibsr.split.ratios[0], int)  # counts stay counts


def test_required_root_and_defaults():
    cfg = compose_config("pretrain", ["data=adni"])
    assert OmegaConf.is_missing(cfg.data, "root")
    default = compose_config("pretrain", [])
    assert (default.data.name, default.data.crop, default.model.embed_dim) == ("demo", 64, PRESETS["tiny"]["embed_dim"])
    assert default.device == "auto" and default.resume is False and "${" not in str(default.output_dir)


def test_predict_and_evaluate_configs_compose():
    cfg = compose_config("predict", ["checkpoint=c.pt", "input=[a.nii.gz,b.nii.gz]", "output=o"])
    assert list(cfg.input) == ["a.nii.gz", "b.nii.gz"] and cfg.overlap == 0.5 and not cfg.tta
    for data in options("finetune", "data"):
        cfg = compose_config("evaluate", ["pred=p", "output=o", f"data={data}"])
        assert cfg.data.task == ("case" if data == "targets" else data)  # targets: one target per case


def test_config_path_points_at_the_entry_point_folders():
    """The installed package's folder (``pkg://asa.configs.<entry>``), or, where the asa imported is a checkout that
    is not installed (as the tests of a wheel install import it), the checkout's folder by its path."""
    import importlib.resources

    for entry in ENTRY_POINTS:
        path = config_path(entry)
        if path.startswith("pkg://"):
            assert path == f"pkg://asa.configs.{entry}"
            assert (importlib.resources.files(f"asa.configs.{entry}") / f"{entry}.yaml").is_file()
        else:
            assert Path(path) == CONFIGS / entry
        assert (CONFIGS / entry / f"{entry}.yaml").is_file()


@pytest.mark.slow
def test_command_line_mistake_names_the_key():
    proc = subprocess.run([sys.executable, "-m", "asa.cli.pretrain", "trainer.epocs=3"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "trainer.epocs" in proc.stderr + proc.stdout  # refused, as a bad option


def test_data_defaults_follow_the_paper():
    for name in options("finetune", "data"):  # fine-tuning: the pretraining crop by default
        assert compose_config("finetune", [f"data={name}"]).data.crop is None
    for name in options("pretrain", "data"):  # pretraining: the brain-centred crop only
        cfg = compose_config("pretrain", [f"data={name}", "data.root=/some/root"])
        assert cfg.data.augment is False and list(cfg.data.channels) == ["t1"]


@pytest.mark.parametrize("override, match", [("amp=fp16", "amp=fp16 needs a CUDA device"), ("amp=fp8", "amp='fp8'"),
                                             ("threads=0", "threads=0")])
def test_predict_precision_and_threads_are_checked_first(tmp_path, override, match):
    from asa.api import predict as run

    cfg = compose_config("predict", [f"checkpoint={tmp_path / 'none.pt'}", f"input={tmp_path}",
                                     f"output={tmp_path / 'out'}", "device=cpu", override])
    with pytest.raises(ValueError, match=match):
        run(cfg)


def test_trainer_precision_threads_compile_defaults():
    cfg = compose_config("finetune", [])
    assert (cfg.trainer.amp, cfg.trainer.threads, cfg.trainer.compile) == ("auto", None, False)
    cfg = compose_config("predict", ["checkpoint=c", "input=i", "output=o"])
    assert (cfg.amp, cfg.threads, cfg.compile) == ("auto", None, False)


def test_bids_preset_and_its_named_presets():
    generic = OmegaConf.to_container(compose_config("pretrain", ["data=bids", "data.root=/r"]).data)
    for name in ("adni", "oasis"):
        named = OmegaConf.to_container(compose_config("pretrain", [f"data={name}", "data.root=/r"]).data)
        assert named == {**generic, "name": name}


def test_demo_data_learns_at_its_batch_and_real_data_keeps_the_paper_rule():
    demo = compose_config("pretrain", [])
    assert (demo.optim.name, demo.optim.scale_lr, demo.optim.base_lr) == ("adamw", False, 3e-3)
    assert demo.optim.betas == [0.9, 0.95] and demo.optim.weight_decay == 0.05
    paper = compose_config("pretrain", ["data=adni"])
    assert (paper.optim.scale_lr, paper.optim.base_lr) == (True, 1.5e-4)
    assert compose_config("pretrain", ["optim=adamw"]).optim.scale_lr is True  # the command line still wins


def test_finetune_defaults_are_the_encoder_aware_recipe_and_sgd_is_the_papers():
    cfg = compose_config("finetune", [])
    opt = cfg.optim
    assert (opt.name, opt.base_lr, opt.weight_decay, list(opt.betas), opt.schedule) == ("adamw", 1e-3, 0.05, [0.9, 0.98], "poly")
    assert (opt.encoder_lr_scale, opt.scratch_encoder_lr_scale, opt.warmup_fraction) == (0.5, 1.0, 0.05)
    assert cfg.trainer.clip_grad == 1.0 and cfg.model.input_skip == "full"
    paper = compose_config("finetune", ["optim=sgd"])
    assert (paper.optim.name, paper.optim.base_lr, paper.optim.momentum, paper.optim.nesterov) == ("sgd", 0.01, 0.99, True)
    assert (paper.optim.encoder_lr_scale, paper.optim.layer_decay, paper.optim.freeze_encoder_epochs) == (1.0, 1.0, 0)
    assert (paper.optim.warmup_fraction, paper.trainer.clip_grad) == (0.0, None)
    assert compose_config("pretrain", []).probe.every == 1


@pytest.mark.parametrize("overrides, lr, warned", [(["optim=adamw"], 1.5e-4 * 2 / 256, True), ([], 3e-3, False)])
def test_effective_lr_is_printed_with_its_rule(capsys, overrides, lr, warned):
    from asa.api.machinery.training import optimizer_and_config
    from asa.models import ASA
    from asa.train.distributed import DistEnv

    cfg = as_config(compose_config("pretrain", overrides), "pretrain")
    model = ASA(img_size=16, **PRESETS["tiny"])
    optimizer, got, _ = optimizer_and_config(cfg, model, DistEnv())
    err = capsys.readouterr().err
    assert got == pytest.approx(lr) and optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    assert "peak learning rate" in err and ("× global batch 2 / 256 = 1.17e-06" in err) == warned
    assert ("below 1e-05" in err) == warned
