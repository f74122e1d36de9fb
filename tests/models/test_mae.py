from __future__ import annotations

import pytest
import torch

from asa.models import (ASA, PRESETS, EncoderSettings, MaskedAutoencoder, PatchReconstruction, SWViT, network_spec,
                        symmetric_position_encoding)

TINY = dict(img_size=32, **PRESETS["tiny"])


def test_output_shapes_and_exact_mask_count():
    model = ASA(**TINY, in_channels=2)
    out = model(torch.randn(3, 2, 32, 32, 32))
    n = 64
    assert out.pred.shape == (3, n, 8**3 * 2)
    assert out.mask.shape == out.weights.shape == (3, n)
    assert (out.mask.sum(1) == round(0.75 * n)).all()
    torch.testing.assert_close(out.weights.sum(1), torch.ones(3))
    assert (out.weights[out.mask == 0] == 0).all()
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_masks_differ_between_samples_and_visible_ids_are_sorted():
    model = ASA(**TINY)
    mask, ids_keep = model.random_masking(8, torch.device("cpu"))
    assert (ids_keep[:, 1:] > ids_keep[:, :-1]).all()
    assert len({tuple(m.tolist()) for m in mask}) == 8
    assert torch.equal(mask.gather(1, ids_keep), torch.zeros_like(ids_keep, dtype=mask.dtype))


def test_encoder_sees_visible_patches_with_their_spe_in_raster_order():
    model = ASA(**TINY).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    _, ids_keep = model.random_masking(1, x.device)
    tokens = model.encoder.patch_embed(x) + symmetric_position_encoding((4, 4, 4), 48)
    expected = model.encoder(tokens[:, ids_keep[0]])
    torch.testing.assert_close(model.forward_encoder(x, ids_keep), expected)


def test_decoder_input_sequence_is_assembled_in_raster_order():
    model = ASA(**TINY)
    mask, ids_keep = model.random_masking(2, torch.device("cpu"))
    latent = torch.randn(2, ids_keep.shape[1], 48)
    seq = model.assemble_decoder_input(latent, ids_keep)
    projected = model.decoder_embed(latent)
    spe = symmetric_position_encoding((4, 4, 4), 48)
    for b in range(2):
        visible = ids_keep[b].tolist()
        for i in range(64):
            if mask[b, i]:
                torch.testing.assert_close(seq[b, i], model.mask_token[0, 0] + spe[i])
            else:
                torch.testing.assert_close(seq[b, i], projected[b, visible.index(i)])


def test_loss_gradient_ignores_visible_predictions():
    model = ASA(**TINY)
    x = torch.randn(2, 1, 32, 32, 32)
    mask, ids_keep = model.random_masking(2, x.device)
    pred = model.forward_decoder(model.forward_encoder(x, ids_keep), ids_keep)
    pred.retain_grad()
    loss, _ = model.forward_loss(x, pred, mask)
    loss.backward()
    assert (pred.grad[mask == 0] == 0).all() and (pred.grad[mask == 1] != 0).any()


@pytest.mark.parametrize(
    "pos_mode, weighting", [("none", "uniform"), ("none", "attentive"), ("mirror", "uniform"), ("mirror", "attentive")]
)
def test_table4_rows_are_configurations(pos_mode, weighting):
    model = ASA(**TINY, pos_mode=pos_mode, loss_weighting=weighting)
    x = torch.randn(1, 1, 32, 32, 32)
    x[:, :, :, :16] = 0  # uneven informativeness
    out = model(x)
    masked = out.weights[out.mask == 1]
    assert torch.allclose(masked, masked[0]) == (weighting == "uniform")
    mirror_pair_equal = torch.equal(model.encoder.pos_embed[0], model.encoder.pos_embed[3 * 16])  # (0,0,0) vs (3,0,0)
    assert mirror_pair_equal == (pos_mode == "mirror")


def test_no_weight_decay_and_encoder_export():
    model = ASA(**TINY)
    nwd = model.no_weight_decay()
    assert "mask_token" in nwd and "encoder.blocks.0.attn.rel_pos_bias" in nwd
    keys = model.encoder_state_dict().keys()
    assert keys and all(k.startswith("encoder.") for k in keys)
    assert "encoder.norm.weight" in keys and not any(k.startswith("decoder") for k in keys)


def test_wrong_input_shape_and_bad_ratio_are_rejected():
    with pytest.raises(ValueError, match=r"expects input \[B, 1, 32, 32, 32\]"):
        ASA(**TINY)(torch.zeros(1, 1, 16, 32, 32))
    with pytest.raises(ValueError, match="mask_ratio"):
        ASA(**TINY, mask_ratio=1.0)


@pytest.mark.slow
def test_tiny_asa_overfits_one_volume():
    torch.manual_seed(0)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 32)] * 3, indexing="ij"))
    x = (torch.sin(3 * grid[0]) * torch.cos(2 * grid[1]) + grid[2])[None, None]
    model = ASA(**TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(200):
        loss = model(x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first = sum(losses[:5]) / 5
    last = sum(losses[-5:]) / 5
    assert last * 5 <= first, (first, last)


def test_the_residual_stream_stays_in_the_autocast_dtype():
    """Under autocast every block of the encoder and the decoder takes and gives the autocast dtype (the layer norms
    keep it, the position codes and the mask-token table are cast to it once), so nothing is cast back and forth
    between blocks; in fp32 nothing is rounded (the table enters as it is)."""
    model = ASA(img_size=32, **PRESETS["tiny"])
    x = torch.randn(2, 1, 32, 32, 32)
    mask, ids_keep = model.random_masking(2, x.device)
    dtypes = set()
    for block in [*model.encoder.blocks, *model.decoder.blocks]:
        block.register_forward_hook(lambda _, args, out: dtypes.add((args[0].dtype, out.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        latent = model.forward_encoder(x, ids_keep)
        full = model.assemble_decoder_input(latent, ids_keep)
        model.decoder(full)
    assert latent.dtype == full.dtype == torch.bfloat16 and dtypes == {(torch.bfloat16, torch.bfloat16)}
    masked = mask.bool()
    table = (model.mask_token + model.decoder_pos_embed).expand(2, -1, -1)
    torch.testing.assert_close(full[masked], table.to(torch.bfloat16)[masked], rtol=0, atol=0)  # rounded once
    full32 = model.assemble_decoder_input(model.forward_encoder(x, ids_keep), ids_keep)
    assert full32.dtype == torch.float32
    torch.testing.assert_close(full32[masked], table[masked], rtol=0, atol=0)


def _parts(decoder_embed_out: int = 48):
    """The parts of the tiny ASA, made in the order ASA makes them."""
    settings = EncoderSettings(img_size=32, **{k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")})
    encoder = settings.encoder()
    decoder_embed = torch.nn.Linear(48, decoder_embed_out)
    decoder = SWViT(settings.blocks(48, 2, 3))
    decoder_pred = torch.nn.Linear(48, 8**3)
    for layer in (decoder_embed, decoder_pred):
        torch.nn.init.xavier_uniform_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    objective = PatchReconstruction(8, weighting="attentive", norm_pix_loss=False, bins=8, normalize="l2")
    return encoder, decoder_embed, decoder, decoder_pred, objective


def test_asa_is_the_masked_autoencoder_of_its_parts():
    """ASA's flat settings name parts; put together by hand they give the same network, weights and loss."""
    torch.manual_seed(0)
    flat = ASA(**TINY)
    torch.manual_seed(0)
    parts = MaskedAutoencoder(*_parts(), mask_ratio=0.75)
    assert network_spec(parts) is None and network_spec(flat)["arch"] == "asa_pretrain"
    assert parts.loss_weighting == flat.loss_weighting == "attentive"  # named by the objective (panels use it)
    assert list(parts.state_dict()) == list(flat.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(parts.state_dict().values(), flat.state_dict().values()))
    x = torch.randn(2, 1, 32, 32, 32)
    torch.manual_seed(1)
    a = flat(x)
    torch.manual_seed(1)
    b = parts(x)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.pred, b.pred)


def test_parts_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match=r"decoder_embed must map 48 -> 48 .* got 48 -> 24"):
        MaskedAutoencoder(*_parts(decoder_embed_out=24), mask_ratio=0.75)
