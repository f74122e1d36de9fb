"""The SW-ViT family (the paper's networks): window attention, the encoder, the symmetric position
encoding, the masked autoencoder and its objectives, the UNETR-style segmenter, SACA and region attention."""
