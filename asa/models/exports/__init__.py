"""The formats asa-export writes for a network family beyond asa's own, written from the family's declaration
(`asa.models.family.Family`: its ``exports``, its ``nnunet`` form and its encoder keys) for every family alike:
nnU-Net v2's ``-pretrained_weights`` checkpoint and plans block (`nnunet`) and nnssl's checkpoint with its
adaptation plan (`nnssl`). They import no family folder (``tests/models/test_model_layering.py``)."""
