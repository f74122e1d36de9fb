"""Named SW-ViT sizes. ``tiny`` is for tests and CPU runs; ``base`` is the paper's."""

from __future__ import annotations

# the pretraining crop edge (DESIGN §1.1: 128³ voxels at 1 mm, 16³ patches of 8): the one default of
# asa-pretrain's data.crop, of fine-tuning without a pretrained file and of the networks' img_size
DEFAULT_CROP = 128

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
