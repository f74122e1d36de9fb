"""MONAI's transformer baselines (UNETR, SwinUNETR) and SA-Swin with its Symmetry-Aware Head."""
