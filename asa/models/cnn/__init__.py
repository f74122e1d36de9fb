"""Convolutional U-Nets planned as nnU-Net plans them."""
