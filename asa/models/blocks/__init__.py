"""The parts the network families share: sizes and patches (``sizes``, ``patch``), symmetry-aware
cross-attention and the token mirror map (``saca``), the masked autoencoder's reconstruction objectives
(``objective``) and an encoder's weights taken over key by key (``encoder_weights``). They import no
family; every family may import them (``tests/models/test_model_layering.py``)."""
