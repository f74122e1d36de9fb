"""The parts the network families share: sizes and patches (``sizes``, ``patch``), symmetry-aware
cross-attention and the token mirror map (``saca``), the masked autoencoder's reconstruction objectives
(``objective``), an encoder's weights taken over key by key (``encoder_weights``) and the symmetric position
code (``position``: the SW-ViT's and Primus's). They import no
family; every family may import them (``tests/models/test_model_layering.py``)."""
