"""CUDA-only paths (skipped without a GPU): the window batch ``auto`` sizes to free memory, the
channels-last layout, which fused attention kernel each attention layer gets, pinned-memory
batches and torch.compile."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from benchmarks.sdpa import sdpa_backends
from asa.data import build_pretrain_dataset, discover, write_demo_dataset
from asa.data.augmentation import apply_deferred_augmentation
from asa.data.store_writer import build_store
from asa.data.preprocessing import PretrainPreprocess
from asa.eval import inference
from asa.eval.inference import SW_BATCH_CAP, predict_volume
from asa.models import ASA, PRESETS, ASASegmenter, RegionAttention, channels_last_inference, compile_blocks
from asa.models.blocks.saca import WindowSymmetryCrossAttention, mirror_index
from asa.train.data import build_loader, close_loader, move_to

pytestmark = pytest.mark.gpu

ENCODER = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}
AMP = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _segmenter(channels: int = 4) -> ASASegmenter:
    torch.manual_seed(0)
    return ASASegmenter(img_size=32, in_channels=channels, out_channels=3, **ENCODER).cuda().eval()


def _agree_where_decided(a: torch.Tensor, b: torch.Tensor, margin: float = 1e-3) -> float:
    """Fraction of voxels whose argmax labels agree, among those where ``b``'s top two classes are
    more than ``margin`` apart (a random network leaves many near-ties that rounding may flip)."""
    top2 = b.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > margin
    assert decided.float().mean() > 0.5  # the comparison covers most of the volume
    return float((a.argmax(0) == b.argmax(0))[decided].float().mean())


@pytest.fixture
def exact_fp32(monkeypatch):
    """fp32 without TF32 (cuDNN convolutions use it by default): layouts and batch sizes that pick
    other kernels then agree to rounding, not to TF32's 10-bit mantissa."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def test_auto_window_batch_fits_and_gives_the_labels_of_batch_1(monkeypatch, exact_fp32):
    net = _segmenter()
    x = torch.randn(4, 80, 72, 64)
    chosen: list[int] = []
    real = inference.auto_sw_batch_size

    def spy(*args, **kwargs):
        chosen.append(real(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(inference, "auto_sw_batch_size", spy)
    auto = predict_volume(net, x, roi_size=(32, 32, 32), multilabel=False, device="cuda")
    one = predict_volume(net, x, roi_size=(32, 32, 32), multilabel=False, sw_batch_size=1, device="cuda")
    assert len(chosen) == 1 and 1 < chosen[0] <= SW_BATCH_CAP  # a tiny network's windows: many fit
    torch.testing.assert_close(auto, one, atol=1e-4, rtol=1e-4)
    assert _agree_where_decided(auto, one) == 1.0


@pytest.mark.parametrize("amp", [None, "fp16", "bf16"])
def test_channels_last_inference_on_cuda_equals_contiguous(amp, exact_fp32):
    """The same probabilities: fp32 to 1e-4 (instance norms become group norms, other reduction
    orders; CPU: 2e-5), fp16 / bf16 to 1e-2 / 3e-2; the same labels wherever they are decided."""
    net = _segmenter()
    laid_out = copy.deepcopy(net)
    channels_last_inference(laid_out)
    convs = [m for m in laid_out.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    x = torch.randn(4, 48, 40, 36)
    kw = dict(roi_size=(32, 32, 32), multilabel=False, sw_batch_size=2, device="cuda", amp_dtype=AMP.get(amp))
    a, b = predict_volume(net, x, **kw), predict_volume(laid_out, x, **kw)
    tol = {None: 1e-4, "fp16": 1e-2, "bf16": 3e-2}[amp]
    torch.testing.assert_close(b, a, atol=tol, rtol=tol)
    assert _agree_where_decided(b, a, margin=2 * tol) == 1.0


# --- fused attention kernels at the paper's scale (128³ crops: 4096 tokens, width 384, 6 heads, S = 32)
def _fwd_bwd(layer: torch.nn.Module, *inputs: torch.Tensor, dtype: torch.dtype):
    def run() -> None:
        with torch.autocast("cuda", dtype=dtype):
            out = layer(*inputs)
        out.float().square().mean().backward()

    return run


def _assert_fused(counts: dict[str, int], what: str) -> None:
    assert counts, f"{what}: no scaled_dot_product_attention call recorded"
    assert "math" not in counts, f"{what}: the unfused math kernel ran ({counts}); it materialises every score"


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_window_attention_of_asa_at_128_runs_a_fused_kernel_despite_its_additive_bias(amp):
    """LW-MSA / SLW-MSA pass the learned relative-position bias (and the shift and padding masks) as
    an additive float mask that needs a gradient: flash attention takes no mask, the memory-efficient
    kernel takes it. Encoder (1024 visible tokens) and decoder (4096) of the base ASA, forward and backward."""
    model = ASA(img_size=128, **PRESETS["base"]).cuda()
    x = torch.randn(1, 1, 128, 128, 128, device="cuda")
    counts = sdpa_backends(_fwd_bwd(lambda v: model(v).loss, x, dtype=AMP[amp]))
    _assert_fused(counts, "ASA base (LW-MSA, SLW-MSA)")
    assert set(counts) <= {"efficient", "cudnn"}, counts  # a mask: never flash
    assert sum(counts.values()) == PRESETS["base"]["depth"] + PRESETS["base"]["decoder_depth"]


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_region_attention_at_128_runs_a_fused_kernel(amp):
    layer = RegionAttention(384, 6, 32).cuda()
    x = torch.randn(2, 4096, 384, device="cuda", requires_grad=True)
    regions = torch.randint(0, 4, (2, 4096), device="cuda")  # ragged regions: padded chunks, a boolean mask
    _assert_fused(sdpa_backends(_fwd_bwd(layer, x, regions, dtype=AMP[amp])), "R-MSA")


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
@pytest.mark.parametrize("cropped", [False, True])
def test_symmetry_cross_attention_at_128_runs_a_fused_kernel(amp, cropped):
    """Windowed SACA on the 16³ grid: without a mask (every mirror inside) flash qualifies; with
    mirrors outside the crop (-1) a boolean key mask goes to the memory-efficient kernel."""
    layer = WindowSymmetryCrossAttention(384, 6, 32).cuda()
    mirror = mirror_index(16).cuda()
    if cropped:
        mirror = mirror.clone()
        mirror[:512] = -1
    x = torch.randn(2, 4096, 384, device="cuda", requires_grad=True)
    counts = sdpa_backends(_fwd_bwd(layer, x, mirror, dtype=AMP[amp]))
    _assert_fused(counts, "SACA")
    if cropped:
        assert "flash" not in counts


def test_pinned_batches_reach_the_gpu_intact():
    """The engine's loader pins batches on CUDA and moves them with non_blocking copies; the values
    that arrive are the batch's."""
    data = TensorDataset(torch.arange(64, dtype=torch.float32).view(16, 4))
    loader, sampler, _, _ = build_loader(data, batch_size=4, rank=0, world_size=1, seed=0, num_workers=2,
                                         pin_memory=True)
    sampler.set_position(0)
    for (batch,) in loader:
        assert batch.is_pinned()
        moved = move_to({"x": [batch]}, torch.device("cuda"))["x"][0]
        assert moved.is_cuda and torch.equal(moved.cpu(), batch)


def test_store_batches_pinned_and_augmented_on_the_gpu_are_the_cpu_batches(tmp_path):
    """Whole store batches travel in the workers' reused shared-memory slots, are pinned by the
    loader's pinning thread and moved with non_blocking copies; with augmentation applied on the GPU
    they are, epoch after epoch, the batches of the main process augmented on the CPU, bit for bit."""
    cases = discover("bids", write_demo_dataset("bids", tmp_path / "bids", cases=4, size=32, seed=0))
    build_store(cases, tmp_path / "store", preprocessor=PretrainPreprocess(32), channels=("t1",), progress=False)
    ds = build_pretrain_dataset(cases * 4, crop=32, augment=True, flip_axes=(0, 2), augment_on="device",
                                store=tmp_path / "store")
    ref, ref_sampler, _, _ = build_loader(ds, batch_size=4, rank=0, world_size=1, seed=0, num_workers=0)
    loader, sampler, _, _ = build_loader(ds, batch_size=4, rank=0, world_size=1, seed=0, num_workers=2,
                                         pin_memory=True)
    try:
        for epoch in (0, 1, 2):
            ref_sampler.set_position(epoch)
            sampler.set_position(epoch)
            for a, b in zip(ref, loader, strict=True):
                assert b["image"].is_pinned() and b["image"].dtype == torch.float16
                on_gpu = apply_deferred_augmentation(move_to(b, torch.device("cuda")))
                on_cpu = apply_deferred_augmentation(move_to(a, torch.device("cpu")))
                assert on_gpu["image"].is_cuda and torch.equal(on_gpu["image"].cpu(), on_cpu["image"])
    finally:
        close_loader(loader)


def test_compiled_blocks_on_cuda_match_eager(exact_fp32):
    """fp32 without TF32 on both sides: with it, eager and compiled convolutions round to TF32's
    10-bit mantissa through different algorithms (1e-3 apart on this network)."""
    torch.manual_seed(0)
    net = _segmenter()
    compiled = copy.deepcopy(net)
    assert compile_blocks(compiled) > 0
    x = torch.randn(2, 4, 32, 32, 32, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x), atol=1e-4, rtol=1e-4)
