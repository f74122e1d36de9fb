"""Named SW-ViT sizes, and the one MONAI SwinViT size. ``tiny`` is for tests and CPU runs; ``base`` is the paper's."""

from __future__ import annotations

from typing import Any

# the pretraining crop edge (docs/method.md §1.1: 128³ voxels at 1 mm, 16³ patches of 8): the one default of
# asa-pretrain's data.crop, of fine-tuning without a pretrained file and of the networks' img_size
DEFAULT_CROP = 128

# the one table of the SW-ViT sizes (model=tiny|small|base); everything else derives from it: the defaults of
# EncoderSettings / EncoderOptions (asa.models.swvit.encoder), of ASA's decoder (asa.models.swvit.mae) and of
# asa-pretrain's model section (asa.models.swvit.mae.PretrainModelConfig) are the base row, and the config groups
# sizes/encoder and sizes/decoder that the model presets name are stored from its rows (asa.api.configuration.checks.register)
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(
        embed_dim=48, depth=4, num_heads=3, decoder_dim=48, decoder_depth=2, decoder_num_heads=3, window_size=8,
    ),
    "small": dict(
        embed_dim=192, depth=8, num_heads=6, decoder_dim=192, decoder_depth=4, decoder_num_heads=6, window_size=32,
    ),
    "base": dict(
        embed_dim=384, depth=12, num_heads=6, decoder_dim=384, decoder_depth=8, decoder_num_heads=6, window_size=32,
    ),
}

# MONAI's SwinViT as SwinUNETR publishes it (feature size 48, 2 blocks in each of 4 stages): the sizes of
# model=swin_unetr|sa_swin|swin_case and of SA-Swin's pretraining (method=sa_swin), which must agree for its
# weights to load: the defaults of their settings (`asa.models.swin.swin_unetr.SwinSettings`).
SWIN_SIZES: dict[str, Any] = dict(feature_size=48, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24))
