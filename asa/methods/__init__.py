"""Pretraining methods as plug-ins: one module per method, each registered by name.

A method is a subclass of `PretrainingMethod` with a settings dataclass (a subclass of
`MethodSettings`, whose defaults are the method's defaults; a field with a fixed set of values is
declared with `one_of` (`asa.choices`, re-exported here), so that ``method.<key>=<typo>`` is refused naming the key and the values). `register_method` puts it in the
registry and stores its settings under the ``method`` config group of ``asa-pretrain``, so
``method=<name>`` selects it and ``method.<key>=value`` sets it. The pretraining job
(`asa.api.pretrain`) builds the network, the training and validation steps, the panels, the probes
and the encoder export through this interface alone, alike for every method.

Built in: ``asa`` (the masked autoencoder family: MAE, A-SSL, SPE-SSL, ASA and the RAT variants are
settings of it, `asa.methods.masked_autoencoder`) and ``sa_swin`` (SA-Swin's Symmetry-Aware Head,
`asa.methods.sa_swin`), and Taleb et al.'s block puzzles ``rpl`` (relative patch location,
`asa.methods.rpl`) and ``jigsaw`` (`asa.methods.jigsaw`) on the same SW-ViT encoder. Packages add their own through the ``asa.methods`` entry-point group (an
entry point naming the method class), or by calling `register_method` before composing a config.
"""

from __future__ import annotations

from asa.methods.base import (METHODS, MethodContext, MethodSettings, PretrainingMethod, RegionNeeds,
                              get_method, register_method, registered_methods)
from asa.methods.jigsaw import JigsawPretraining, JigsawSettings
from asa.methods.masked_autoencoder import (MAEPretraining, MAESettings, MaskedAutoencoderPretraining,
                                            MaskedAutoencoderSettings)
from asa.methods.rpl import RelativePatchLocationPretraining, RelativePatchLocationSettings
from asa.methods.sa_swin import SymmetryAwarePretraining, SymmetryAwareSettings
from asa.choices import check_choices, one_of

__all__ = [
    "METHODS", "MAEPretraining", "MAESettings", "JigsawPretraining", "JigsawSettings", "MaskedAutoencoderPretraining", "MaskedAutoencoderSettings",
    "MethodContext", "MethodSettings", "PretrainingMethod", "RegionNeeds", "RelativePatchLocationPretraining",
    "RelativePatchLocationSettings", "SymmetryAwarePretraining", "SymmetryAwareSettings", "get_method",
    "check_choices", "one_of", "register_method", "registered_methods",
]
