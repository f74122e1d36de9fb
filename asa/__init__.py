"""asa: Attentive Symmetric Autoencoder for 3D brain MRI (pretraining and segmentation fine-tuning)."""

__version__ = "0.1.0"
