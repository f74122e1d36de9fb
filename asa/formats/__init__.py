"""Formats for other tools, one file each behind one protocol (`asa.formats.base.Format`), registered with
`asa.formats.base.register_format`: asa-export (`asa.api.export.export_model`) loops over them. A new format is one
module that subclasses `Format`, declares its options and registers an instance; a plug-in's module does the same
when it is imported (``tests/export/test_toy_format.py`` registers one from outside the package).
"""

from asa.formats.base import (ENCODER, FOLDER, SEGMENTER, Format, Job, Option, Part, choices, formats,  # noqa: F401
                              register_format)

# asa's own formats register themselves, in this order (the folder's files are listed in it)
from asa.formats import hub, onnx, nnunet, nnssl, monai  # noqa: E402,F401,I001
