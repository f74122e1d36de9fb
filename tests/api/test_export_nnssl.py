"""asa-export of a resenc encoder in nnssl's checkpoint format: the folder nnU-Net's nnssl route downloads
(``adaptation_plan.json``, ``checkpoint_final.pth``, ``config.json``), a file that ``torch.load(weights_only=True)``
reads, a plan with exactly the fields nnssl's dataclasses take, loaded by the rules of nnU-Net's
``PretrainedTrainer.load_pretrained_weights`` (restated here, nnU-Net 2.8.1 lacks that route), and read back by
asa's own nnssl reader with every encoder tensor equal."""
from __future__ import annotations

import json
import pydoc

import pytest
import torch

from asa.api.export import export_model
from asa.io import save_checkpoint
from asa.io.hub import CONFIG_FILE, NNSSL_CHECKPOINT, NNSSL_PLAN
from asa.models import load_weights, network_spec
from asa.models.cnn.resenc import resenc_unet

# field names of nnssl's dataclasses (MIC-DKFZ/nnssl, commit 7044864): AdaptationPlan and DynamicArchitecturePlans in
# src/nnssl/adaptation_planning/adaptation_plan.py, Plan and ConfigurationPlan in
# src/nnssl/experiment_planning/experiment_planners/plan.py (Plan.from_dict / ConfigurationPlan(**v) take no others)
ADAPTATION_PLAN = {"architecture_plans", "pretrain_plan", "pretrain_num_input_channels",
                   "recommended_downstream_patchsize", "key_to_encoder", "key_to_stem", "keys_to_in_proj", "key_to_lpe"}
ARCHITECTURE_PLANS = {"arch_class_name", "arch_kwargs", "arch_kwargs_requiring_import"}
DYNAMIC_ARCH = {"n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_blocks_per_stage",
                "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op", "dropout_op_kwargs",
                "nonlin", "nonlin_kwargs"}
PLAN = {"dataset_name", "plans_name", "original_median_spacing_after_transp", "image_reader_writer",
        "transpose_forward", "transpose_backward", "configurations", "experiment_planner_used"}
CONFIGURATION_PLAN = {"data_identifier", "preprocessor_name", "spacing_style", "normalization_schemes",
                      "use_mask_for_norm", "resampling_fn_data", "resampling_fn_data_kwargs", "resampling_fn_mask",
                      "resampling_fn_mask_kwargs", "spacing", "patch_size"}
# what MIC-DKFZ/nnUNet reads besides (commit 0e49508): nnunetv2/training/nnUNetTrainer/pretraining/pretrainedTrainer.py
# (pretrain_patch_size) and dynamicPretrainedTrainer.py (architecture_kwargs: n_stages, kernel_sizes)
NNUNET_EXTRA = {"pretrain_patch_size", "architecture_kwargs"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnssl")
    torch.manual_seed(5)
    net = resenc_unet(img_size=32, in_channels=1, out_channels=1, size="tiny")
    for p in net.parameters():  # distinct values everywhere (norm weights start as ones)
        p.data.normal_()
    save_checkpoint(root / "last.pt", {"model": net.state_dict(), "network": network_spec(net), "step": 11})
    out = export_model(root / "last.pt", root / "model")
    return out, net


def test_folder_is_the_hub_layout_nnunet_downloads(exported):
    out, _ = exported
    for name in (NNSSL_PLAN, NNSSL_CHECKPOINT, CONFIG_FILE):  # like_nnssl.maybe_download_pretrained_weights
        assert (out / name).is_file(), name
    blob = torch.load(out / NNSSL_CHECKPOINT, weights_only=True)  # tensors and plain containers only
    plan = json.loads((out / NNSSL_PLAN).read_text())
    assert plan.pop("trainer_name") == blob["trainer_name"]  # add_adaptation_plan.py writes the plan + trainer
    assert plan == json.loads(json.dumps(blob["nnssl_adaptation_plan"]))


def test_plan_has_the_fields_nnssl_and_nnunet_read(exported):
    out, net = exported
    blob = torch.load(out / NNSSL_CHECKPOINT, weights_only=True)
    assert {"network_weights", "nnssl_adaptation_plan", "trainer_name"} <= blob.keys()
    plan = blob["nnssl_adaptation_plan"]
    assert set(plan) == ADAPTATION_PLAN | NNUNET_EXTRA
    arch = plan["architecture_plans"]
    assert set(arch) == ARCHITECTURE_PLANS and arch["arch_class_name"] == "ResidualEncoderUNet"
    assert set(arch["arch_kwargs"]) == DYNAMIC_ARCH
    # DynamicArchitecturePlans.get_kwargs_requiring_import: the string-valued ones
    assert arch["arch_kwargs_requiring_import"] == ["conv_op", "norm_op", "nonlin"]
    assert set(plan["pretrain_plan"]) == PLAN
    ((name, config),) = plan["pretrain_plan"]["configurations"].items()
    assert set(config) == CONFIGURATION_PLAN and config["spacing_style"] == name
    assert config["patch_size"] == [32] * 3 == plan["pretrain_patch_size"] == plan["recommended_downstream_patchsize"]
    assert config["spacing"] is None and name == "noresample"  # the demo run kept the images' own grid
    assert config["normalization_schemes"] == ["ZScoreNormalization"]
    assert plan["pretrain_num_input_channels"] == 1
    assert plan["architecture_kwargs"]["n_stages"] == len(net.plan.features)
    assert plan["architecture_kwargs"]["kernel_sizes"] == [[3, 3, 3]] * len(net.plan.features)
    # the network's own declarations (dynamic-network-architectures' ResidualEncoderUNet)
    assert (plan["key_to_encoder"], plan["key_to_stem"], plan["key_to_lpe"]) == ("encoder.stages", "encoder.stem", None)
    assert plan["keys_to_in_proj"] == ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"]


def _nnunet_rules_load(path, channels: int) -> torch.nn.Module:
    """nnU-Net's nnssl route restated: the plan's architecture built as get_network_from_plans builds it (dotted
    names located), then PretrainedTrainer.load_pretrained_weights' rules for a separate stem: the tensors under
    key_to_encoder / key_to_stem, prefixes stripped, the first in-projection repeated over the channels and divided
    by their number, each loaded strictly into the network's own encoder and stem."""
    blob = torch.load(path, weights_only=True)
    plan, weights = blob["nnssl_adaptation_plan"], blob["network_weights"]
    arch = plan["architecture_plans"]
    kwargs = dict(arch["arch_kwargs"])
    for key in arch["arch_kwargs_requiring_import"]:
        kwargs[key] = pydoc.locate(kwargs[key])
    cls = pydoc.locate(f"dynamic_network_architectures.architectures.unet.{arch['arch_class_name']}")
    net = cls(input_channels=channels, num_classes=3, deep_supervision=False, **kwargs)
    enc_key, stem_key = plan["key_to_encoder"], plan["key_to_stem"]
    assert stem_key not in weights  # a separate stem: the route's second branch
    encoder = {k[len(enc_key):].lstrip("."): v for k, v in weights.items() if k.startswith(enc_key)}
    stem = {k: v for k, v in weights.items() if k.startswith(stem_key)}
    if channels > plan["pretrain_num_input_channels"]:
        proj = stem[plan["keys_to_in_proj"][0] + ".weight"].repeat(1, channels, 1, 1, 1) / channels
        for key in plan["keys_to_in_proj"]:
            stem[key + ".weight"] = proj
    stem = {k[len(stem_key):].lstrip("."): v for k, v in stem.items()}
    net.get_submodule(net.key_to_encoder).load_state_dict(encoder)  # strict
    net.get_submodule(net.key_to_stem).load_state_dict(stem)
    return net


@pytest.mark.parametrize("channels", [1, 4])
def test_nnunet_rules_load_every_encoder_tensor(exported, channels):
    out, net = exported
    loaded = _nnunet_rules_load(out / NNSSL_CHECKPOINT, channels).state_dict()
    ours = {k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
    differ = [k for k, v in ours.items()
              if not torch.equal(loaded[k], v.repeat(1, channels, 1, 1, 1) / channels if ".stem.convs.0." in k
                                 and k.endswith(".weight") and v.dim() == 5 else v)]
    assert differ == [] and len(ours) > 50


def test_asa_reads_its_nnssl_export_back_strictly(exported, capsys):
    out, net = exported
    back = load_weights(out / NNSSL_CHECKPOINT)
    assert back["foreign"]["layout"] == "nnssl"
    ours = {k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
    assert set(back["encoder"]) == set(ours)
    assert [k for k, v in ours.items() if not torch.equal(back["encoder"][k], v)] == []  # 0 tensors differ
    kwargs = back["network"]["kwargs"]
    assert (kwargs["features"], kwargs["strides"], kwargs["blocks"], kwargs["decoder_convs"]) == (
        net.plan.features, net.plan.strides, net.plan.blocks, net.plan.decoder_convs)
    assert kwargs["img_size"] == [32] * 3
    import asa

    encoder = asa.load_encoder(out / NNSSL_CHECKPOINT)  # the strict load: every tensor matched
    assert "missing (0): -" in capsys.readouterr().out
    assert all(torch.equal(v, ours["encoder." + k]) for k, v in encoder.state_dict().items())


def test_masked_pretraining_checkpoint_exports_and_reads_back(tmp_path):
    """asa-pretrain model=resenc's own network (resenc_pretrain, masked convolutions): its encoder in nnssl's
    format, the run's method and 1 mm resampling in the plan, read back with 0 encoder tensors differing."""
    from asa.models import build_network

    torch.manual_seed(2)
    net = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": 32, "size": "tiny"}})
    for p in net.parameters():
        p.data.normal_()
    save_checkpoint(tmp_path / "last.pt", {"model": net.state_dict(), "network": network_spec(net), "step": 4,
                                           "config": {"method": {"name": "mae"},
                                                      "data": {"name": "oasis", "root": "/data", "resample_mm": 1.0}}})
    out = export_model(tmp_path / "last.pt", tmp_path / "m")
    blob = torch.load(out / NNSSL_CHECKPOINT, weights_only=True)
    plan = blob["nnssl_adaptation_plan"]
    assert blob["trainer_name"] == "asa:mae" and blob["current_epoch"] == 4
    assert plan["pretrain_plan"]["dataset_name"] == "oasis"
    assert plan["pretrain_plan"]["configurations"]["onemmiso"]["spacing"] == [1.0, 1.0, 1.0]
    back = load_weights(out / NNSSL_CHECKPOINT)["encoder"]
    ours = {k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
    assert set(back) == set(ours) and [k for k, v in ours.items() if not torch.equal(back[k], v)] == []


def test_nnssl_file_keeps_shared_storages(exported, tmp_path):
    """nnU-Net's decoder holds the encoder, so its state dict names each encoder tensor twice over one storage:
    the file keeps them shared, the size of ``torch.save`` of the network's own state dict (what nnssl's
    ``save_checkpoint`` writes), not one copy per key."""
    from asa.formats.nnssl import nnssl_checkpoint, nnunet_network

    out, _ = exported
    saved = torch.load(out / NNSSL_CHECKPOINT, weights_only=True)["network_weights"]
    shared = [k for k in saved if k.startswith("decoder.encoder.")]
    assert shared and all(saved[k].data_ptr() == saved[k.removeprefix("decoder.")].data_ptr() for k in shared)
    export = load_weights(out)
    torch.save(nnssl_checkpoint(export)["network_weights"], tmp_path / "ours.pth")
    torch.save(nnunet_network(export, source="test", seed=0).state_dict(), tmp_path / "plain.pth")
    ratio = (tmp_path / "ours.pth").stat().st_size / (tmp_path / "plain.pth").stat().st_size
    print(f"nnssl file {ratio:.3f}x the plain state dict")
    assert ratio <= 1.05, ratio
    assert (out / NNSSL_CHECKPOINT).stat().st_size <= 1.05 * (tmp_path / "plain.pth").stat().st_size


# --- a re-export keeps the published file's own plan --------------------------------------------------------------

OPENMIND_CITATION = {"type": "pretraining", "name": "OpenMind MAE",
                     "apa_citations": ["Wald, T. et al. (2024). An OpenMind for 3D medical vision self-supervised learning."]}


def _openmind_file(path, *, license_id=None):
    """An nnssl file in the OpenMind release's form: ``arch_class_name: ResEncL`` with no kwargs, an ``onemmiso``
    plan at 1 mm with nnssl's unmasked z-score, its own dataset, trainer and citations (what nnU-Net's
    PretrainedTrainer prints); with ``license_id`` a top-level ``license``."""
    from tests.fixtures.published import nnssl_checkpoint as openmind_form

    blob = openmind_form(seed=3)
    plan = blob["nnssl_adaptation_plan"]
    plan["architecture_plans"] = {"arch_class_name": "ResEncL", "arch_kwargs": None, "arch_kwargs_requiring_import": []}
    plan["pretrain_plan"]["image_reader_writer"] = "SimpleITKIO"
    blob |= {"trainer_name": "BaseMAETrainer_BS8", "citations": [OPENMIND_CITATION]}
    if license_id:
        blob["license"] = license_id
    torch.save(blob, path)
    return blob


def _like_pretrained_spacing(checkpoint, dataset_spacing):
    """nnU-Net's ``nnUNetv2_preprocess_like_nnssl -am like_pretrained`` (nnunetv2/experiment_planning/like_nnssl.py,
    new_spacing_from_mode), restated: the spacing of the plan's first configuration, or the dataset's own when the
    pretraining did not resample (spacing None)."""
    plan = torch.load(checkpoint, weights_only=True)["nnssl_adaptation_plan"]
    spacing = next(iter(plan["pretrain_plan"]["configurations"].values()))["spacing"]
    return list(dataset_spacing) if spacing is None else spacing


def test_reexport_keeps_spacing_normalisation_dataset_and_trainer(tmp_path):
    """A 1 mm OpenMind-form file re-exported: every format carries its plan unchanged (spacing, normalisation, reader,
    dataset, trainer, citations), the card names its source, and nnU-Net's like_pretrained preprocessing of a 1.5 mm
    dataset goes to 1 mm with the re-export as with the original."""
    source = _openmind_file(tmp_path / "checkpoint_final.pth")
    out = export_model(tmp_path / "checkpoint_final.pth", tmp_path / "m")
    blob = torch.load(out / NNSSL_CHECKPOINT, weights_only=True)
    plan, original = blob["nnssl_adaptation_plan"], source["nnssl_adaptation_plan"]
    assert plan["pretrain_plan"] == original["pretrain_plan"]  # spacing, normalisation, reader, dataset: unchanged
    assert plan["architecture_plans"] == original["architecture_plans"]
    assert {k: plan[k] for k in original} == original  # nothing the file stated is rewritten
    assert plan["pretrain_patch_size"] == [32] * 3 and plan["architecture_kwargs"]["n_stages"] == 4  # nnU-Net's extras
    assert blob["trainer_name"] == "BaseMAETrainer_BS8" and blob["citations"] == [OPENMIND_CITATION]
    assert json.loads((out / NNSSL_PLAN).read_text())["pretrain_plan"] == original["pretrain_plan"]
    assert _like_pretrained_spacing(tmp_path / "checkpoint_final.pth", [1.5] * 3) == [1.0, 1.0, 1.0]
    assert _like_pretrained_spacing(out / NNSSL_CHECKPOINT, [1.5] * 3) == [1.0, 1.0, 1.0]
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["spacing_mm"] == [1.0, 1.0, 1.0] and config["data"] == {"name": "Dataset745_OpenMind"}
    assert config["method"] == "BaseMAETrainer_BS8" and config["license"] == "other"
    assert config["preprocessing"]["use_mask_for_norm"] == [False]
    nnunet = torch.load(out / "nnunet_pretrained_weights.pth", weights_only=True)["asa"]["published"]
    assert nnunet["adaptation_plan"]["pretrain_plan"] == original["pretrain_plan"]
    card = (out / "README.md").read_text()
    assert "a published nnssl checkpoint, checkpoint_final.pth" in card and "Dataset745_OpenMind" in card
    assert "ZScoreNormalization (use_mask_for_norm [False])" in card and "no resampling" not in card
    assert "Wald, T. et al. (2024)" in card and "records no licence" in card
    again = export_model(out, tmp_path / "again")  # the folder re-exported: the plan still the source's
    assert torch.load(again / NNSSL_CHECKPOINT, weights_only=True)["nnssl_adaptation_plan"]["pretrain_plan"] == \
        original["pretrain_plan"]


def test_reexport_keeps_a_recorded_licence(tmp_path):
    from asa.api.machinery.run import OptionError

    _openmind_file(tmp_path / "ckpt.pth", license_id="cc-by-4.0")
    out = export_model(tmp_path / "ckpt.pth", tmp_path / "m")
    assert "license: cc-by-4.0" in (out / "README.md").read_text()
    assert torch.load(out / NNSSL_CHECKPOINT, weights_only=True)["license"] == "cc-by-4.0"
    with pytest.raises(OptionError, match="published under 'cc-by-4.0'"):
        export_model(tmp_path / "ckpt.pth", tmp_path / "m2", license="apache-2.0")
    assert not (tmp_path / "m2").exists()


# nnssl's reader registry (MIC-DKFZ/nnssl 7044864, src/nnssl/imageio/reader_writer_registry.py,
# recursive_find_reader_writer_by_name via src/nnssl/utilities/find_class_by_name.py): Plan.image_reader_writer_class()
# imports each module of nnssl.imageio in turn and takes the first attribute of that name, else raises. The reader
# classes those modules define:
NNSSL_IMAGEIO = {"base_reader_writer": {"BaseReaderWriter"}, "nibabel_reader_writer": {"NibabelIO", "NibabelIOWithReorient"},
                 "reader_writer_registry": {"NibabelIO", "NibabelIOWithReorient", "SimpleITKIO", "Tiff3DIO"},
                 "simpleitk_reader_writer": {"SimpleITKIO"}, "tif_reader_writer": {"Tiff3DIO"}}


def _nnssl_reader(name: str) -> str:
    """Plan.image_reader_writer_class()'s rule, restated: the module of nnssl.imageio that has ``name``, or the
    RuntimeError nnssl raises."""
    for module in sorted(NNSSL_IMAGEIO):
        if name in NNSSL_IMAGEIO[module]:
            return f"nnssl.imageio.{module}.{name}"
    raise RuntimeError(f"Unable to find reader writer class '{name}'")


def test_own_plan_names_a_reader_nnssl_resolves_and_the_transpose_asa_did(exported, tmp_path):
    """asa's own plan: a reader nnssl's registry finds (NibabelIOWithReorient) and the transpose that, after it,
    gives the array asa's reader gives (RAS+, axis 0 left-right): checked on a LAS file with distinct voxels."""
    import nibabel as nib
    import numpy as np

    from asa.io import load_volume

    out, _ = exported
    plan = json.loads((out / NNSSL_PLAN).read_text())["pretrain_plan"]
    assert _nnssl_reader(plan["image_reader_writer"]).endswith("nibabel_reader_writer.NibabelIOWithReorient")
    with pytest.raises(RuntimeError):
        _nnssl_reader("NibabelReaderWriter")  # what earlier exports wrote
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS: the stored axis 0 runs right -> left
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "las.nii.gz")
    img = nib.load(tmp_path / "las.nii.gz")  # NibabelIOWithReorient: to RAS, then axes (2, 1, 0)
    read = np.asarray(img.as_reoriented(nib.io_orientation(img.affine)).get_fdata(), dtype=np.float32).transpose(2, 1, 0)
    ours = load_volume(tmp_path / "las.nii.gz", label=False).array
    assert np.array_equal(read.transpose(plan["transpose_forward"]), ours)
    assert np.array_equal(ours, data[::-1])  # asa's axis 0 runs left -> right
    assert plan["transpose_backward"] == plan["transpose_forward"] == [2, 1, 0]


@pytest.mark.parametrize("codes", [("L", "A", "S"), ("L", "I", "A")])
def test_nnunet_readers_hand_the_encoder_what_the_card_says(tmp_path, codes):
    """The card's axis note (asa.formats.nnunet.READING_NOTE) checked with nnU-Net's own readers on a LAS and a
    LIA file: SimpleITKIO gives the stored order reversed (left-right on axis 2, right to left), while
    NibabelIOWithReorient and then transpose_forward [2, 1, 0] give exactly asa's RAS+ array."""
    readers = pytest.importorskip("nnunetv2.imageio.nibabel_reader_writer")
    sitk_io = pytest.importorskip("nnunetv2.imageio.simpleitk_reader_writer")
    import nibabel as nib
    import numpy as np

    from asa.io import load_volume
    from asa.formats.nnunet import READING_NOTE

    affine = np.zeros((4, 4))
    affine[3, 3] = 1
    for k, (axis, sign) in enumerate(nib.orientations.axcodes2ornt(codes)):  # stored axis k along RAS axis `axis`
        affine[int(axis), k] = sign
    ijk = np.stack(np.meshgrid(*map(np.arange, (5, 6, 7)), indexing="ij"), -1)
    world_x = (ijk @ affine[:3, :3].T)[..., 0]  # RAS x of each voxel: grows from left to right
    data = (world_x + np.random.default_rng(0).uniform(0, 0.1, size=(5, 6, 7))).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "img.nii.gz")

    def left_right(array):  # (the axis along which x changes, whether it grows from left to right)
        steps = [np.diff(array, axis=a).mean() for a in range(3)]
        axis = int(np.argmax(np.abs(steps)))
        return axis, bool(steps[axis] > 0)

    ours = load_volume(tmp_path / "img.nii.gz", label=False).array
    assert left_right(ours) == (0, True)  # asa: axis 0, left to right
    default = sitk_io.SimpleITKIO().read_images([str(tmp_path / "img.nii.gz")])[0][0]
    assert np.array_equal(default, data.transpose(2, 1, 0))  # the stored order, reversed
    assert left_right(default) == (2, False)  # LAS, LIA: axis 2, right to left (flipped)
    reoriented = readers.NibabelIOWithReorient().read_images([str(tmp_path / "img.nii.gz")])[0][0]
    assert left_right(reoriented) == (2, True)
    assert np.array_equal(reoriented.transpose(2, 1, 0), ours)  # with transpose_forward [2, 1, 0]: asa's array
    assert "NibabelIOWithReorient" in READING_NOTE and "[2, 1, 0]" in READING_NOTE
