"""The residual-encoder U-Net (``resenc``) and its masked-convolution pretraining (``resenc_pretrain``)."""
from __future__ import annotations

import pytest
import torch

from asa.losses import patch_informativeness
from asa.models import build_network
from asa.models.cnn.masked import MaskedConv3d, MaskedInstanceNorm3d, max_mirror_visible
from asa.models.cnn.resenc import RESENC_SIZES, coordinate_channel, plan_resenc
from asa.models.blocks.patch import patchify
from benchmarks.resenc import AutogradNorm  # the norm as it was before its gradient was written out
from tests.fixtures.ops import AtenOps


def _resenc(img_size=32, **kwargs):  # the tiny widths: what these tests check does not depend on them
    return build_network({"arch": "resenc", "kwargs": {"img_size": img_size, "size": "tiny", **kwargs}})


def _mae(**kwargs):
    torch.manual_seed(0)
    return build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": 32, "size": "tiny", **kwargs}})


@pytest.mark.parametrize("crop, size, stages, features", [
    (32, "tiny", 4, [8, 16, 32, 64]),
    (64, "tiny", 5, [8, 16, 32, 64, 64]),
    (128, "L", 6, [32, 64, 128, 256, 320, 320]),
    (256, "M", 6, [32, 64, 128, 256, 320, 320]),  # at most 5 halvings
    (48, "M", 4, [32, 64, 128, 256]),  # 48 -> 24 -> 12 -> 6; a fourth halving would leave 3 < 4
])
def test_plan_halves_to_about_four_voxels(crop, size, stages, features):
    plan = plan_resenc(crop, size)
    assert len(plan.features) == stages and plan.features == features
    assert plan.strides == [1] + [2] * (stages - 1)
    assert crop // plan.total_stride >= 4 and plan.blocks == list(RESENC_SIZES[size][2][:stages])
    assert plan.decoder_convs == [1] * (stages - 1)


@pytest.mark.parametrize("crop", [33, 8, 12])
def test_plan_refuses_a_crop_without_two_halvings(crop):
    with pytest.raises(ValueError, match=f"resenc: crop {crop} allows .* multiple of 16"):
        plan_resenc(crop)


def test_resenc_l_has_resenc_l_parameters_and_the_package_keys():
    with torch.device("meta"):  # shapes only: none of the 102 M weights is drawn
        net = build_network({"arch": "resenc", "kwargs": {"img_size": 128, "in_channels": 1, "out_channels": 2,
                                                          "size": "L"}})
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 102.3
    keys = list(net.state_dict())
    assert all(k.startswith(("encoder.stem.", "encoder.stages.", "decoder.")) for k in keys)
    assert net.network_kwargs["blocks"] == [1, 3, 4, 6, 6, 6]


def test_rebuilt_from_its_spec_with_equal_shapes():
    net = _resenc(in_channels=2, out_channels=3)
    again = build_network({"arch": "resenc", "kwargs": net.network_kwargs})
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in again.state_dict().items()}


def test_deep_supervision_in_training_full_resolution_in_eval():
    net = _resenc(in_channels=1, out_channels=3)
    x = torch.randn(2, 1, 32, 32, 32)
    out = net.train()(x)
    assert [tuple(o.shape) for o in out] == [(2, 3, 32, 32, 32), (2, 3, 16, 16, 16)]
    assert net.capabilities.deep_supervision == 2
    assert net.eval()(x).shape == (2, 3, 32, 32, 32)


@pytest.mark.parametrize("spec, expected_frozen", [
    ({"arch": "resenc", "kwargs": {"img_size": 32, "size": "tiny", "in_channels": 1, "out_channels": 3}}, {0}),
    ({"arch": "resenc", "kwargs": {"img_size": 32, "size": "tiny", "in_channels": 1, "out_channels": 3,
                                   "deep_supervision": False}}, {0, 1}),
    ({"arch": "resenc_pretrain", "kwargs": {"img_size": 32, "size": "tiny"}}, {0, 1}),
])
def test_every_trainable_parameter_is_in_the_loss(spec, expected_frozen):
    """What DistributedDataParallel needs at every step: a gradient for each trainable parameter; the heads
    no output reaches are frozen and keep their nnU-Net keys."""
    torch.manual_seed(0)
    net = build_network(spec).train()
    x = torch.randn(2, 1, 32, 32, 32)
    out = net(x)
    loss = out.loss if hasattr(out, "loss") else sum(o.float().mean() for o in out)
    loss.backward()
    missing = [name for name, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    frozen = {name for name, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {f"decoder.seg_layers.{i}.{w}" for i in expected_frozen for w in ("weight", "bias")}
    assert {f"decoder.seg_layers.{i}.weight" for i in range(3)} <= set(net.state_dict())


def test_coordinate_channel_is_mirror_symmetric_with_hand_values():
    code = coordinate_channel((1, 4, 2, 2))[0, 0, :, 0, 0]
    assert torch.allclose(code, torch.tensor([0.75, 0.25, 0.25, 0.75]))  # |i + 0.5 - 2| / 2
    shifted = coordinate_channel((1, 4, 2, 2), reference=8, offsets=torch.tensor([[2, 0, 0]]))[0, 0, :, 0, 0]
    assert torch.allclose(shifted, torch.tensor([0.375, 0.125, 0.125, 0.375]))  # voxels 2..5 of an 8-box
    wide = coordinate_channel((1, 16, 3, 3))[0, 0]
    assert torch.equal(wide, wide.flip(0))


def test_masking_masks_exactly_round_ratio_blocks():
    net = _mae(mask_ratio=0.75)
    mask = net.random_masking(5, torch.device("cpu"))
    assert net.num_blocks == 64 and torch.equal(mask.sum(1), torch.full((5,), 48.0))


def test_masked_encoder_ignores_the_input_inside_masked_blocks():
    """The SparK invariant, bit for bit in fp32: input changed only inside masked blocks changes no encoder
    stage's output at a visible position."""
    net = _mae().eval()
    assert any(isinstance(m, MaskedConv3d) for m in net.encoder.modules())
    assert any(isinstance(m, MaskedInstanceNorm3d) for m in net.encoder.modules())
    torch.manual_seed(1)
    x = torch.randn(2, 1, 32, 32, 32)
    mask = net.random_masking(2, x.device)
    voxels = torch.nn.functional.interpolate(net.block_mask(mask), size=(32, 32, 32))  # 1 = visible
    changed = x + (1 - voxels) * 10 * torch.randn_like(x)
    with torch.no_grad():
        a, b = net.forward_encoder(x, mask), net.forward_encoder(changed, mask)
    for stage_a, stage_b in zip(a, b):
        visible = torch.nn.functional.interpolate(net.block_mask(mask), size=stage_a.shape[2:]).bool()
        visible = visible.expand_as(stage_a)
        assert torch.equal(stage_a[visible], stage_b[visible])
        assert not stage_a[~visible].any()  # sparse: zero at masked positions
    # the control: a change at visible voxels does move the encoder
    moved = x + voxels * 0.1
    with torch.no_grad():
        assert not torch.equal(net.forward_encoder(moved, mask)[-1], a[-1])


def test_visible_only_instance_norm_statistics():
    net = _mae()
    norm = next(m for m in net.encoder.modules() if isinstance(m, MaskedInstanceNorm3d))
    x = torch.randn(1, norm.num_features, 8, 8, 8)
    x[:, :, 4:] = 0  # a masked convolution's output: zero at masked voxels
    net.visible.set(torch.tensor([1.0, 0.0]).view(1, 1, 2, 1, 1).expand(1, 1, 2, 2, 2).contiguous())
    try:
        out = norm(x)
    finally:
        net.visible.set(None)
    half = x[:, :, :4]
    expected = (half - half.mean((2, 3, 4), keepdim=True)) / torch.sqrt(half.var((2, 3, 4), unbiased=False,
                                                                               keepdim=True) + norm.eps)
    expected = expected * norm.weight.view(1, -1, 1, 1, 1) + norm.bias.view(1, -1, 1, 1, 1)
    assert torch.allclose(out[:, :, :4], expected, atol=1e-5) and not out[:, :, 4:].any()


def test_attentive_loss_is_the_block_weighted_masked_error():
    net = _mae(loss_weighting="attentive")
    torch.manual_seed(2)
    x, pred = torch.randn(2, 1, 32, 32, 32), torch.randn(2, 1, 32, 32, 32)
    mask = net.random_masking(2, x.device)
    loss, weights = net.forward_loss(x, pred, mask)
    g = patch_informativeness(x, patch_size=8) * mask  # Ḡ per block, masked ones
    p = g / g.sum(1, keepdim=True)
    err = ((patchify(pred, 8) - patchify(x, 8)) ** 2).mean(-1)
    assert torch.allclose(weights, p, atol=1e-6)
    assert torch.allclose(loss, (p * err).sum(1).mean(), atol=1e-6)
    uniform, w_uniform = _mae(loss_weighting="uniform").forward_loss(x, pred, mask)
    assert torch.allclose(uniform, (err * mask).sum(1).div(48).mean(), atol=1e-6)
    assert not torch.allclose(loss, uniform)


def test_mirror_aware_masking_keeps_the_asked_fraction_of_mirrors_visible():
    net = _mae(mirror_visible=0.33)
    mask = net.random_masking(64, torch.device("cpu")).view(64, 4, 4, 4)
    one_sided = (mask.bool() & ~mask.flip(1).bool()).sum((1, 2, 3))
    assert torch.equal(one_sided, torch.full((64,), 16)) and torch.equal(mask.sum((1, 2, 3)), torch.full((64,), 48.0))
    assert net.one_sided == round(0.33 * 48)
    # uniform masking leaves mirrors visible by chance only: fewer on average
    chance = _mae().random_masking(256, torch.device("cpu")).view(256, 4, 4, 4)
    assert (chance.bool() & ~chance.flip(1).bool()).sum((1, 2, 3)).float().mean() < 14
    paired = _mae(mirror_visible=0.0).random_masking(8, torch.device("cpu")).view(8, 4, 4, 4)
    assert torch.equal(paired, paired.flip(1))  # q = 0: mirror pairs masked together


def test_mirror_visible_beyond_what_the_ratio_allows_is_refused():
    assert max_mirror_visible(64, 48) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"mirror_visible=0.5: at mask_ratio 0.75 at most 0.333"):
        _mae(mirror_visible=0.5)


def test_pretraining_forward_and_backward_reach_encoder_and_mask_tokens():
    net = _mae(coord_channel=True, mirror_visible=0.2)
    out = net(torch.randn(2, 1, 32, 32, 32))
    out.loss.backward()
    assert out.pred.shape == (2, 1, 32, 32, 32) and torch.isfinite(out.loss)
    assert net.encoder.stem.convs[0].conv.weight.shape[1] == 2  # image + coordinate
    assert net.encoder.stem.convs[0].conv.weight.grad.abs().sum() > 0
    assert net.mask_tokens[0].grad.abs().sum() > 0
    assert set(net.encoder_state_dict()) == {f"encoder.{k}" for k in net.encoder.state_dict()}


def test_fine_tuning_network_takes_the_encoder_tensor_for_tensor(tmp_path):
    pre = _mae()
    export = {"encoder": pre.encoder_state_dict(), "network": {"arch": pre.network_arch, "kwargs": pre.network_kwargs}}
    torch.save(export, tmp_path / "encoder.pt")
    seg = _resenc(in_channels=1, out_channels=3)
    report = seg.load_pretrained(tmp_path / "encoder.pt")
    assert not report.missing and not report.unexpected
    for key, value in pre.encoder.state_dict().items():
        assert torch.equal(seg.encoder.state_dict()[key], value), key
    # four image channels: the 1-channel stem repeated and divided by 4, the response to a replicated volume kept
    seg4 = _resenc(in_channels=4, out_channels=3)
    seg4.load_pretrained(tmp_path / "encoder.pt")
    w1, w4 = pre.encoder.stem.convs[0].conv.weight, seg4.encoder.stem.convs[0].conv.weight
    assert torch.allclose(w4.sum(1, keepdim=True), w1, atol=1e-6)


def test_fine_tuning_refuses_a_file_of_another_plan_or_channel(tmp_path):
    pre = _mae(coord_channel=True)
    torch.save({"encoder": pre.encoder_state_dict(), "network": {"arch": pre.network_arch,
                                                                 "kwargs": pre.network_kwargs}}, tmp_path / "c.pt")
    seg = _resenc(in_channels=1, out_channels=3)
    with pytest.raises(ValueError, match="pretrained with the coordinate channel; set model.coord_channel=true"):
        seg.load_pretrained(tmp_path / "c.pt")
    small = _mae()
    state = small.encoder_state_dict()
    state.pop("encoder.stages.3.blocks.0.conv2.conv.weight")
    state.pop("encoder.stages.3.blocks.0.conv2.all_modules.0.weight")
    torch.save({"encoder": state, "network": {"arch": small.network_arch, "kwargs": small.network_kwargs}},
               tmp_path / "cut.pt")
    with pytest.raises(ValueError, match=r"2 encoder tensor\(s\) .* \(encoder.stages.3.blocks.0.conv2.all_modules.0.weight, "):
        seg.load_pretrained(tmp_path / "cut.pt")


def test_zero_encoder_states_leaves_the_full_resolution_stage_alone():
    net = _resenc(in_channels=1, out_channels=2).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad(), net.zero_encoder_states():
        zeroed = net(x)
        for p in net.encoder.stages[1:].parameters():
            p.add_(torch.randn_like(p))  # deeper stages no longer matter
        assert torch.equal(net(x), zeroed)
    with torch.no_grad():
        assert not torch.equal(net(x), zeroed)  # outside the context they do
    assert net.capabilities.zero_encoder


def _masked_inputs(net, seed=1):
    torch.manual_seed(seed)
    x = torch.randn(2, 1, 32, 32, 32)
    mask = net.random_masking(2, x.device)
    voxels = torch.nn.functional.interpolate(net.block_mask(mask), size=(32, 32, 32))  # 1 = visible
    return x, mask, voxels


def test_a_coarser_mask_block_leaves_the_stages_below_its_grid_dense_and_finer_ones_exact():
    """mask_block 16 over a total stride 8: every stage (32³ … 4³) is at least as fine as the 2³ block grid and
    keeps the SparK invariant bit for bit; with mask_block 4 (an 8³ grid) the 4³ bottleneck is coarser than
    the grid and runs dense, as nnssl runs the stages below its 16³ mask grid."""
    net = _mae(mask_block=16, densify="spark").eval()
    assert net.block == 16 and net.block_grid == (2, 2, 2) and net.num_masked == 6
    x, mask, voxels = _masked_inputs(net)
    changed = x + (1 - voxels) * 10 * torch.randn_like(x)
    with torch.no_grad():
        a, b = net.forward_encoder(x, mask), net.forward_encoder(changed, mask)
    for stage_a, stage_b in zip(a, b):  # 32, 16, 8, 4: all at or finer than the 2³ block grid
        visible = torch.nn.functional.interpolate(net.block_mask(mask), size=stage_a.shape[2:]).bool()
        assert torch.equal(stage_a[visible.expand_as(stage_a)], stage_b[visible.expand_as(stage_b)])
    fine = _mae(mask_block=4).eval()  # an 8³ grid: the 4³ bottleneck is coarser, so it runs dense
    x, mask, voxels = _masked_inputs(fine)
    with torch.no_grad():
        skips = fine.forward_encoder(x, mask)
    assert fine.visible.at((4, 4, 4), torch.float32) is None
    assert len(fine.mask_tokens) == 3  # no token (no parameter outside the loss) for the dense stage
    assert (skips[-1] != 0).float().mean() > 0.4  # dense: not zeroed at masked positions
    assert not skips[0][~torch.nn.functional.interpolate(fine.block_mask(mask), size=(32,) * 3).bool()
                        .expand_as(skips[0])].any()  # the full-resolution stage is masked


def test_a_mask_block_that_does_not_divide_the_crop_or_a_weight_unit_that_does_not_divide_it_is_refused():
    with pytest.raises(ValueError, match=r"mask_block=12: a power of two that divides the crop 32"):
        _mae(mask_block=12)
    with pytest.raises(ValueError, match=r"weight_patch=16: the attentive weight's unit must divide the mask block 8"):
        _mae(weight_patch=16)
    with pytest.raises(ValueError, match="densify must be one of"):
        _mae(densify="sparse")


def test_spark_densify_takes_visible_statistics_then_the_token_then_a_3_cube_conv():
    net = _mae(mask_block=16, densify="spark")
    assert isinstance(net.densify[0][1], torch.nn.Identity)  # none at full resolution (nnssl)
    assert all(d[1].kernel_size == (3, 3, 3) for d in list(net.densify)[1:])
    assert all(t.abs().max() <= 0.02 for t in net.mask_tokens)  # truncated at ±0.02
    x, mask, voxels = _masked_inputs(net)
    skips = net.forward_encoder(x, mask)
    captured = []
    hook = net.densify[0][1].register_forward_hook(lambda m, i, o: captured.append(i[0]))
    net.forward_decoder(skips, mask)
    hook.remove()
    filled = captured[0]  # the full-resolution stage after norm and token, before its (identity) projection
    masked = ~voxels.bool().expand_as(filled)
    token = net.mask_tokens[0].expand_as(filled)
    assert torch.equal(filled[masked], token[masked])
    # visible positions: the visible-only norm of the skip, so per channel their mean is the norm's bias
    norm = net.densify[0][0]
    for i in range(2):
        visible = filled[i][:, voxels[i, 0].bool()]  # [C, visible voxels]
        assert torch.allclose(visible.mean(1), norm.bias.detach(), atol=1e-4)


def test_input_masked_by_where_so_a_non_finite_voxel_in_a_masked_block_does_not_leak():
    net = _mae(mask_block=16, densify="spark")
    x, mask, voxels = _masked_inputs(net)
    x = x.masked_fill(~voxels.bool(), float("inf"))
    out = net.forward_decoder(net.forward_encoder(x, mask), mask)
    assert torch.isfinite(out).all()


def test_attentive_weight_at_the_papers_granularity_weights_each_8_cube_of_the_masked_blocks():
    """weight_patch 8 inside 16³ mask blocks: p ∝ Ḡ of each masked 8³ unit (AR-loss, docs/method.md §1.5
    steps 5–6), sharpened by γ; uniform weights give the per-block loss exactly."""
    net = _mae(mask_block=16, weight_patch=8, weight_power=2.0)
    torch.manual_seed(2)
    x, pred = torch.randn(2, 1, 32, 32, 32), torch.randn(2, 1, 32, 32, 32)
    mask = net.random_masking(2, x.device)
    units = net.weight_units(mask)
    assert units.shape == (2, 64) and torch.equal(units.sum(1), torch.full((2,), 48.0))  # 6 blocks × 8 units
    # a unit is masked iff the 16³ block that holds it is: compare voxel by voxel
    unit_vox = torch.nn.functional.interpolate(units.view(2, 1, 4, 4, 4), size=(32,) * 3)
    block_vox = torch.nn.functional.interpolate(mask.view(2, 1, 2, 2, 2), size=(32,) * 3)
    assert torch.equal(unit_vox, block_vox)
    loss, weights = net.forward_loss(x, pred, mask)
    g = patch_informativeness(x, patch_size=8).pow(2) * units
    p = g / g.sum(1, keepdim=True)
    err = ((patchify(pred, 8) - patchify(x, 8)) ** 2).mean(-1)
    assert torch.allclose(weights, p, atol=1e-6) and torch.allclose(loss, (p * err).sum(1).mean(), atol=1e-6)
    per_block = _mae(mask_block=16, loss_weighting="uniform").forward_loss(x, pred, mask)[0]
    per_unit = _mae(mask_block=16, weight_patch=8, loss_weighting="uniform").forward_loss(x, pred, mask)[0]
    assert torch.allclose(per_block, per_unit, atol=1e-6)


def test_weight_spread_of_uniform_one_hot_and_hand_values():
    from asa.losses.reconstruction import weight_spread
    units = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    assert weight_spread(units / 4, units) == pytest.approx({"cv": 0.0, "effective_share": 1.0})
    one = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])
    assert weight_spread(one, units) == pytest.approx({"cv": 3 ** 0.5, "effective_share": 0.25})
    p = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0]])  # mean 0.25, std sqrt(0.0125); 1/Σp² = 1/0.3
    assert weight_spread(p, units) == pytest.approx({"cv": 0.0125 ** 0.5 / 0.25, "effective_share": (1 / 0.3) / 4})


def test_a_coordinate_channel_encoder_is_refused_at_another_crop_whose_edge_would_rescale_the_channel(tmp_path):
    """The channel is |x − x_mid| / (X/2) with X the pretraining crop: at another crop the voxel 16.5 mm right of
    the midline would read 16.5/24 in pretraining (48³) and 16.5/16 in fine-tuning (32³) — refused, not recoded."""
    torch.manual_seed(0)
    pre = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": 48, "size": "tiny", "coord_channel": True}})
    torch.save({"encoder": pre.encoder_state_dict(), "network": {"arch": pre.network_arch,
                                                                 "kwargs": pre.network_kwargs}}, tmp_path / "c48.pt")
    at32 = _resenc(in_channels=1, out_channels=2,
                                                       coord_channel=True)
    with pytest.raises(ValueError, match=r"coordinate channel at a 48-voxel crop.*this network's crop is 32: "
                                         r"set data.crop=48"):
        at32.load_pretrained(tmp_path / "c48.pt")
    at48 = _resenc(img_size=48, in_channels=1, out_channels=2,
                                                       coord_channel=True)
    assert not at48.load_pretrained(tmp_path / "c48.pt", verbose=False).missing
    assert coordinate_channel((1, 48, 1, 1), reference=48)[0, 0, 32, 0, 0] == pytest.approx((32.5 - 24) / 24)


def test_visible_only_instance_norm_in_bf16_is_the_exact_norm_rounded_once():
    """Under bf16 the statistics still accumulate in fp32 (no fp32 copy of the activation): the output stays within
    bf16's rounding of the exact (float64) visible-only norm."""
    net = _mae()
    norm = next(m for m in net.encoder.modules() if isinstance(m, MaskedInstanceNorm3d))
    torch.manual_seed(3)
    blocks = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    visible = torch.nn.functional.interpolate(blocks, size=(32, 32, 32)).double()
    x = ((torch.randn(2, norm.num_features, 32, 32, 32) * 3 + 2).double() * visible).bfloat16()
    net.visible.set(blocks)
    try:
        out = norm(x).double()
    finally:
        net.visible.set(None)
    exact = x.double()
    count = visible.sum((2, 3, 4), keepdim=True)
    mean = exact.sum((2, 3, 4), keepdim=True) / count
    var = (exact * exact).sum((2, 3, 4), keepdim=True) / count - mean ** 2
    expected = ((exact - mean) / torch.sqrt(var + norm.eps) * norm.weight.double().view(1, -1, 1, 1, 1)
                + norm.bias.double().view(1, -1, 1, 1, 1)) * visible
    # one bf16 rounding of the result (8 significant bits) plus that of the scale and shift: 2**-7 relative
    assert ((out - expected).abs() <= 2 ** -7 * expected.abs() + 2 ** -7).all()
    assert not out[visible.expand_as(out) == 0].any()


def test_the_visible_only_norms_written_out_gradient_is_autograds():
    """Its forward is the earlier one's, bit for bit, so are the weight's and the bias's gradients; the input's
    gradient is autograd's at visible voxels to fp32 rounding and 0 at masked ones (autograd's holds the mean's
    share there, which the masked convolution before every norm zeroes)."""
    net = _mae()
    norm = next(m for m in net.encoder.modules() if isinstance(m, MaskedInstanceNorm3d))
    torch.manual_seed(1)
    blocks = (torch.rand(2, 1, 2, 2, 2) > 0.5).float()
    m = torch.nn.functional.interpolate(blocks, size=(8, 8, 8))
    x0 = torch.randn(2, norm.num_features, 8, 8, 8) * 3 * m
    grad = torch.randn_like(x0)
    got = []
    net.visible.set(blocks)
    try:
        for cls in (MaskedInstanceNorm3d, AutogradNorm):
            norm.__class__ = cls
            norm.zero_grad()
            x = x0.clone().requires_grad_(True)
            y = norm(x)
            (y * grad).sum().backward()
            got.append((y.detach(), x.grad, norm.weight.grad.clone(), norm.bias.grad.clone()))
    finally:
        norm.__class__ = MaskedInstanceNorm3d
        net.visible.set(None)
    (y, dx, dw, db), (y0, dx0, dw0, db0) = got
    assert torch.equal(y, y0) and torch.equal(dw, dw0) and torch.equal(db, db0)
    assert torch.allclose(dx * m, dx0 * m, rtol=1e-5, atol=1e-6) and not dx[(m == 0).expand_as(dx)].any()
    assert dx0[(m == 0).expand_as(dx0)].abs().max() > 0  # the share the convolution's mask removes


def test_the_masked_steps_weight_gradients_are_those_of_autograds_norm():
    """asa-pretrain's masking (16³ blocks, SparK's densify, whose visible-only norm takes a stage's output, a weight
    per 8³): every weight's gradient as with autograd's norm, to fp32 rounding."""
    torch.manual_seed(2)
    x = torch.randn(2, 1, 32, 32, 32)
    grads = []
    for cls in (MaskedInstanceNorm3d, AutogradNorm):
        net = _mae(size="tiny", mask_block=16, densify="spark", weight_patch=8)
        for module in net.modules():
            if isinstance(module, MaskedInstanceNorm3d):
                module.__class__ = cls
        torch.manual_seed(3)  # the same mask
        net(x).loss.backward()
        grads.append({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-7), name


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-6), (torch.bfloat16, 1e-6)])
def test_the_norms_sum_of_squares_is_one_fp32_reduction_of_the_exact_squares(dtype, bound):
    """Σx² by one reduction (`sum_of_squares`) is the float64 sum of the squares of x's values to fp32 rounding, in
    bf16 too, where the squares written out first (before 2026-11-27, `benchmarks.resenc.squares_summed`) were each
    rounded to 8 bits."""
    from asa.models.cnn.masked import sum_of_squares
    from benchmarks.resenc import squares_summed

    torch.manual_seed(4)
    x = (torch.randn(2, 3, 8, 8, 8) * 3 + 1).to(dtype)
    exact = x.double().square().sum((2, 3, 4), keepdim=True)
    got = sum_of_squares(x)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 1, 1, 1)
    assert ((got.double() - exact).abs() <= bound * exact).all()
    if dtype == torch.bfloat16:  # the squares rounded to bf16 one by one stray further
        assert (squares_summed(x).double() - exact).abs().max() > 10 * (got.double() - exact).abs().max()


def _masked_step(net, x, *, previous: bool = False) -> tuple[dict, list[str]]:
    """Every parameter's gradient of one masked step and the aten ops of its backward (``previous``: the norms'
    squares written out and every convolution's output mask with its own backward, as before 2026-11-27)."""
    from benchmarks.harness import Workload
    from benchmarks.resenc import PreviousNorm, with_norm

    with_norm(net, PreviousNorm if previous else MaskedInstanceNorm3d, Workload("set", lambda: None)).run()
    net.zero_grad()
    torch.manual_seed(3)  # the same mask
    loss = net(x).loss
    with AtenOps() as ops:
        loss.backward()
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}, ops.names


def test_a_convolution_read_by_a_visible_only_norm_skips_its_masks_backward():
    """Every masked convolution of the encoder feeds a visible-only norm, whose input gradient is zero at masked
    voxels: the output mask's backward (grad·m) is left out, one elementwise pass per masked convolution, and every
    weight's gradient is what it was with it, bit for bit (fp32; the norm's statistics as before too, so that this
    change alone is compared). A norm of another class (autograd's gradient) keeps the mask's backward."""
    from unittest import mock

    import asa.models.cnn.masked as masked
    from benchmarks.resenc import squares_summed

    net = _mae(size="tiny", mask_block=16, densify="spark", weight_patch=8)
    convs = [m for m in net.encoder.modules() if isinstance(m, MaskedConv3d)]
    assert convs and all(type(m.reader) is MaskedInstanceNorm3d for m in convs)
    assert not any("reader" in key for key in net.state_dict())
    x = torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(2))
    with mock.patch.object(masked, "sum_of_squares", squares_summed):  # the statistics as before
        now, ops_now = _masked_step(net, x)
    before, ops_before = _masked_step(net, x, previous=True)
    assert now.keys() == before.keys() and len(now) > 10
    assert all(torch.equal(now[k], before[k]) for k in now)
    assert ops_before.count("mul") - ops_now.count("mul") == _convs_in_masked_stages(net) > 0


def _convs_in_masked_stages(net) -> int:
    """The encoder's convolutions whose output is at least as fine as the mask's block grid (those it masks)."""
    sizes = []
    hooks = [m.register_forward_hook(lambda mod, args, out: sizes.append(out.shape[2])) for m in net.encoder.modules()
             if isinstance(m, MaskedConv3d)]
    try:
        with torch.no_grad():
            net.encoder(torch.zeros(1, 1, *net.img_size))
    finally:
        for hook in hooks:
            hook.remove()
    return sum(1 for s in sizes if s >= net.block_grid[0])


def test_the_masked_step_as_it_was_gives_the_same_gradients_to_fp32_rounding():
    """Both changes together (Σx² by one reduction, the skipped mask backward) against the step before them: every
    gradient to fp32 rounding (the biases of convolutions before an instance norm, whose exact gradient is 0, are
    rounding noise of 1e-8 either way)."""
    net = _mae(size="tiny", mask_block=16, densify="spark", weight_patch=8)
    x = torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(5))
    now, _ = _masked_step(net, x)
    before, _ = _masked_step(net, x, previous=True)
    for name in now:
        assert torch.allclose(now[name], before[name], rtol=1e-4, atol=1e-6), name
