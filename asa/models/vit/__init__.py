"""MONAI's ViT (patch 16, global self-attention) under its decoders: UNETR, the baseline."""
