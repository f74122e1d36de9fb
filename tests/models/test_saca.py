from __future__ import annotations

import pytest
import torch

from asa.models import (ASA, ASASegmenter, SymmetryCrossAttention, WindowSymmetryCrossAttention, network_spec,
                        symmetric_position_encoding)
from asa.models.blocks.saca import check_mirror_windows, mirror_index


def _reference_cross(attn: SymmetryCrossAttention, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """softmax(Q K̃ᵀ/√d) Ṽ per head, written out with the module's weights."""
    b, n, c = f.shape
    h = attn.num_heads
    d = c // h
    wk, wv = attn.kv.weight.split(c)
    bk, bv = attn.kv.bias.split(c)
    q = (f @ attn.q.weight.T + attn.q.bias).view(b, n, h, d).transpose(1, 2)
    k = (g @ wk.T + bk).view(b, -1, h, d).transpose(1, 2)
    v = (g @ wv.T + bv).view(b, -1, h, d).transpose(1, 2)
    a = (q @ k.transpose(-1, -2) / d**0.5).softmax(-1)
    return attn.proj((a @ v).transpose(1, 2).reshape(b, n, c))


def test_saca_to_itself_equals_hand_written_cross_attention():
    torch.manual_seed(0)
    attn = SymmetryCrossAttention(24, 3).eval()
    f = torch.randn(2, 10, 24)
    torch.testing.assert_close(attn(f, f), _reference_cross(attn, f, f), atol=1e-5, rtol=1e-5)


def test_saca_queries_from_f_keys_values_from_mirror():
    torch.manual_seed(0)
    attn = SymmetryCrossAttention(16, 2).eval()
    f, g = torch.randn(1, 6, 16), torch.randn(1, 9, 16)
    out = attn(f, g)
    torch.testing.assert_close(out, _reference_cross(attn, f, g), atol=1e-5, rtol=1e-5)
    # a permutation of the mirror tokens (a set of keys/values) changes nothing; of f, permutes the output
    torch.testing.assert_close(attn(f, g[:, torch.randperm(9)]), out, atol=1e-5, rtol=1e-5)
    perm = torch.randperm(6)
    torch.testing.assert_close(attn(f[:, perm], g), out[:, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n, m", [(5, 5), (4, 12), (1, 3)])
def test_saca_shapes(n, m):
    assert SymmetryCrossAttention(12, 3)(torch.randn(2, n, 12), torch.randn(2, m, 12)).shape == (2, n, 12)


@pytest.mark.parametrize("args", [dict(dim=10, num_heads=3), dict(dim=0, num_heads=1), dict(dim=8, num_heads=0)])
def test_saca_bad_arguments(args):
    with pytest.raises(ValueError):
        SymmetryCrossAttention(**args)


def test_saca_bad_inputs():
    attn = SymmetryCrossAttention(8, 2)
    with pytest.raises(ValueError, match="f_mirror"):
        attn(torch.randn(1, 4, 8), torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="f_mirror"):
        attn(torch.randn(1, 4, 8), torch.randn(1, 4, 6))


@pytest.mark.parametrize("grid, axis", [((4, 3, 2), 0), ((4, 3, 2), 1), ((3, 5, 4), 2), (6, 0)])
def test_mirror_map_is_an_involution_flipping_one_axis(grid, axis):
    m = mirror_index(grid, axis)
    torch.testing.assert_close(m[m], torch.arange(m.numel()))
    sizes = (grid,) * 3 if isinstance(grid, int) else grid
    coords = torch.stack(torch.meshgrid(*(torch.arange(s) for s in sizes), indexing="ij"), -1).view(-1, 3)
    expected = coords.clone()
    expected[:, axis] = sizes[axis] - 1 - expected[:, axis]
    assert torch.equal(coords[m], expected)


@pytest.mark.parametrize("grid, axis, s", [((8, 8, 8), 0, 8), ((8, 8, 8), 0, 32), ((4, 4, 4), 0, 32),
                                           ((8, 4, 4), 2, 4), ((8, 4, 4), 1, 16), ((8, 8, 8), 2, 16)])
def test_mirror_map_sends_windows_onto_windows(grid, axis, s):
    check_mirror_windows(grid, axis, s, "test")
    windows = mirror_index(grid, axis).view(-1, s) // s  # window of each token's mirror, per window
    assert (windows == windows[:, :1]).all()
    assert sorted(windows[:, 0].tolist()) == list(range(windows.shape[0]))  # a bijection on windows


@pytest.mark.parametrize("grid, axis, s", [((6, 6, 6), 0, 8), ((8, 8, 6), 2, 4), ((8, 5, 4), 1, 8),
                                           ((6, 4, 4), 0, 64)])
def test_mirror_windows_refused_where_the_property_fails(grid, axis, s):
    with pytest.raises(ValueError, match="window_size"):
        check_mirror_windows(grid, axis, s, "here")


def test_windowed_saca_attends_to_the_mirror_window_only():
    torch.manual_seed(0)
    grid, s = (4, 2, 2), 4  # four windows, one per slab along axis 0
    layer = WindowSymmetryCrossAttention(8, 2, s).eval()
    mirror = mirror_index(grid, 0)
    x = torch.randn(1, 16, 8)
    base = layer(x, mirror)
    # window k's output equals plain SACA of window k against window 3 - k
    for k in range(4):
        own, other = x[:, k * s : (k + 1) * s], x[:, (3 - k) * s : (4 - k) * s]
        torch.testing.assert_close(base[:, k * s : (k + 1) * s], layer.attn(own, other), atol=1e-5, rtol=1e-5)
    # changing a token of window 0 moves the outputs of window 0 (its queries) and window 3 (its keys)
    y = x.clone()
    y[0, 1] += 1.0
    moved = (layer(y, mirror) - base).abs().amax(-1)[0] > 1e-6
    assert moved.view(4, s).any(1).tolist() == [True, False, False, True]


def test_windowed_saca_pads_without_leaking():
    torch.manual_seed(0)
    layer = WindowSymmetryCrossAttention(8, 2, 4).eval()
    x = torch.randn(2, 6, 8)
    mirror = torch.tensor([5, 4, 3, 2, 1, 0])
    out = layer(x, mirror)
    xm = x[:, mirror]
    torch.testing.assert_close(out[:, 4:], layer.attn(x[:, 4:], xm[:, 4:]), atol=1e-5, rtol=1e-5)


def _tiny_asa(**kw) -> ASA:
    args = dict(img_size=32, patch_size=4, embed_dim=24, depth=2, num_heads=2, decoder_dim=16, decoder_depth=2,
                decoder_num_heads=2, window_size=8)
    return ASA(**{**args, **kw})


def test_mirror_consistent_masking_keeps_pairs_and_exact_count():
    torch.manual_seed(0)
    model = _tiny_asa(saca="encoder")  # grid 8³, N = 512, 384 masked
    mask, ids_keep = model.random_masking(5, torch.device("cpu"))
    mirror = mirror_index(model.grid, 0)
    assert torch.equal(mask, mask[:, mirror])
    assert (mask.sum(1) == round(0.75 * 512)).all()
    assert torch.equal(ids_keep, ids_keep.sort(1).values)
    assert torch.equal(mask.gather(1, ids_keep), torch.zeros_like(ids_keep, dtype=mask.dtype))
    assert not torch.equal(mask[0], mask[1])  # still random per sample
    # and the encoder's visible mirror index points at each token's mirror
    pos = model.encoder.mirror_tokens(ids_keep=ids_keep)
    assert torch.equal(ids_keep.gather(1, pos), mirror[ids_keep])


def test_plain_masking_is_not_mirror_consistent():
    torch.manual_seed(0)
    mask, _ = _tiny_asa().random_masking(2, torch.device("cpu"))
    assert not torch.equal(mask, mask[:, mirror_index((8, 8, 8), 0)])


@pytest.mark.parametrize("saca", ["decoder", "encoder", "all"])
def test_asa_with_saca_trains_and_adds_parameters(saca):
    torch.manual_seed(0)
    model = _tiny_asa(saca=saca)
    names = [n for n, _ in model.named_parameters() if ".saca." in n]
    assert any(n.startswith("encoder.") for n in names) == (saca in ("encoder", "all"))
    assert any(n.startswith("decoder.") for n in names) == (saca in ("decoder", "all"))
    out = model(torch.randn(2, 1, 32, 32, 32))
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if ".saca." in n)


def test_asa_saca_bad_options():
    with pytest.raises(ValueError, match="saca must be one of"):
        _tiny_asa(saca="both")
    with pytest.raises(ValueError, match="window_size"):
        _tiny_asa(img_size=24, saca="decoder")  # grid 6³: windows of 8 straddle slabs of 36
    with pytest.raises(ValueError, match="even"):
        _tiny_asa(img_size=(20, 32, 32), window_size=4, saca="encoder")  # grid 5 along lr_axis


def test_segmenter_with_encoder_saca_loads_its_pretrained_saca_weights(tmp_path):
    torch.manual_seed(0)
    kw = dict(embed_dim=24, depth=4, num_heads=2, window_size=8)
    asa = ASA(img_size=32, decoder_dim=16, decoder_depth=1, decoder_num_heads=2, saca="encoder", **kw)
    torch.save({"encoder": asa.encoder_state_dict(), "network": network_spec(asa)}, tmp_path / "enc.pt")
    seg = ASASegmenter(img_size=32, out_channels=3, saca="encoder", **kw)
    report = seg.load_pretrained(tmp_path / "enc.pt", verbose=False)
    assert not report.missing and not report.unexpected
    assert any(".saca." in k for k in report.loaded)
    plain = ASASegmenter(img_size=32, out_channels=3, **kw).load_pretrained(tmp_path / "enc.pt", verbose=False)
    assert plain.unexpected and all(".saca." in k or "norm_saca" in k for k in plain.unexpected)
    assert seg(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


@pytest.mark.slow
def test_segmenter_mirror_follows_the_brain_frame():
    kw = dict(embed_dim=24, depth=4, num_heads=2, window_size=8)
    seg = ASASegmenter(img_size=32, out_channels=2, saca="encoder", reference_grid=(6, 4, 4), **kw)  # crop grid 4³
    coords = torch.stack(torch.meshgrid(*(torch.arange(4),) * 3, indexing="ij"), -1).view(-1, 3)
    # reference coordinate a0 + o0 mirrors to 5 - (a0 + o0): crop coordinate 5 - 2·o0 - a0
    m = seg.encoder.mirror_tokens(torch.tensor([[1, 0, 0], [0, 0, 0]]))
    torch.testing.assert_close(m[0], mirror_index((4, 4, 4), 0))  # a crop centred on the reference centre
    for n, (a0, a1, a2) in enumerate(coords.tolist()):
        target = 5 - a0  # offset 0: slabs 2, 3 pair with 3, 2; slabs 0, 1 mirror outside the crop
        assert m[1, n] == (-1 if target > 3 else (target * 4 + a1) * 4 + a2)
    x = torch.randn(2, 1, 32, 32, 32)
    out = seg(x, offsets=torch.tensor([[0, 0, 0], [1, 0, 0]]))
    assert out.shape == (2, 2, 32, 32, 32) and torch.isfinite(out).all()


def test_windowed_saca_without_a_mirror_adds_nothing():
    torch.manual_seed(0)
    layer = WindowSymmetryCrossAttention(8, 2, 4).eval()
    x = torch.randn(1, 8, 8)
    mirror = torch.tensor([-1, -1, -1, -1, 5, 4, 7, 6])  # window 0 has no mirror, window 1 is its own
    out = layer(x, mirror)
    assert torch.equal(out[:, :4], torch.zeros(1, 4, 8))
    torch.testing.assert_close(out[:, 4:], layer.attn(x[:, 4:], x[:, [5, 4, 7, 6]]), atol=1e-5, rtol=1e-5)
    half = torch.tensor([-1, 0, -1, 1, 5, 4, 7, 6])  # tokens 1 and 3 see each other only
    out = layer(x, half)
    assert torch.equal(out[0, [0, 2]], torch.zeros(2, 8))
    torch.testing.assert_close(out[:, [1, 3]], layer.attn(x[:, [1, 3]], x[:, [0, 1]]), atol=1e-5, rtol=1e-5)


def _spe_pairs_are_saca_pairs(codes: torch.Tensor, mirror: torch.Tensor) -> None:
    """Two tokens share a position code exactly when they are one token or SACA's mirror pair."""
    shared = (codes[:, None, :] == codes[None, :, :]).all(-1)  # [N, N]
    n = torch.arange(len(mirror))
    expected = n[:, None] == n[None, :]
    has = mirror >= 0
    expected[n[has], mirror[has]] = True
    assert torch.equal(shared, expected)


@pytest.mark.parametrize("grid", [4, (2, 4, 4)])
@pytest.mark.slow
def test_crop_frame_folds_about_the_crops_own_centre(grid):
    """spe_frame=crop with a crop grid other than the reference grid (allow_grid_change): the crop's
    table pairs w with G-1-w, as SACA's mirror map does (it paired 0..3 about the reference centre)."""
    kw = dict(embed_dim=24, depth=4, num_heads=2, window_size=8)
    img = tuple(8 * g for g in ((grid,) * 3 if isinstance(grid, int) else grid))
    seg = ASASegmenter(img_size=img, out_channels=2, saca="encoder", spe_frame="crop", reference_grid=(6, 6, 6), **kw)
    assert seg.reference_grid == (6, 6, 6)  # still the lattice the crops and windows start on
    codes = seg.position_codes(None)
    assert torch.equal(codes, symmetric_position_encoding(seg.grid, 24))  # the crop's own table
    g = seg.grid[0]
    coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in seg.grid), indexing="ij"), -1).view(-1, 3)
    for w in range(g):  # codes of mirror planes w, G-1-w are equal
        assert torch.equal(codes[coords[:, 0] == w], codes[coords[:, 0] == g - 1 - w])
    mirror = seg.encoder.mirror_tokens(None)
    assert torch.equal(mirror, mirror_index(seg.grid, 0))
    _spe_pairs_are_saca_pairs(codes, mirror)
    x = torch.randn(1, 1, *img)
    with torch.no_grad():  # offsets change nothing in the crop frame
        assert torch.equal(seg(x, offsets=torch.tensor([[1, 0, 0]])), seg(x))


@pytest.mark.slow
def test_brain_frame_offset_zero_pairs_codes_as_saca_does():
    """Offsets left out mean offset 0 in the brain frame: SACA's mirror is then taken about the reference
    centre too, the fold of the codes (a 4-grid crop in a 6-grid reference: slabs 2, 3 pair)."""
    kw = dict(embed_dim=24, depth=4, num_heads=2, window_size=8)
    seg = ASASegmenter(img_size=32, out_channels=2, saca="encoder", reference_grid=(6, 4, 4), **kw)
    mirror = seg.encoder.mirror_tokens(None)
    assert torch.equal(mirror, seg.encoder.mirror_tokens(torch.zeros(1, 3, dtype=torch.long))[0])
    _spe_pairs_are_saca_pairs(seg.position_codes(None), mirror)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(seg(x), seg(x, offsets=torch.zeros(1, 3, dtype=torch.long)))
