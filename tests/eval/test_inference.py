from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from asa.eval.inference import (
    SW_BATCH_CAP,
    auto_sw_batch_size,
    check_sw_batch_size,
    flip_subsets,
    nnunet_starts,
    nonzero_box,
    predict_volume,
    window_batch_for_memory,
)
from asa.models import Capabilities


class Positional(nn.Module):
    """Not flip-equivariant: output = input + a ramp along axis 0 (two output channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-1, 1, x.shape[2]).view(1, 1, -1, 1, 1)
        y = x[:, :1] * self.scale + ramp
        return torch.cat([y, -y], dim=1)


def test_flip_subsets():
    assert flip_subsets([2, 0]) == [(), (0,), (2,), (0, 2)]
    assert len(flip_subsets([0, 1, 2])) == 8
    with pytest.raises(ValueError, match="spatial axes"):
        flip_subsets([3])


def test_single_window_prediction_is_the_activated_output():
    model = Positional()
    x = torch.randn(1, 16, 16, 16)
    got = predict_volume(model, x, roi_size=(16, 16, 16), multilabel=True)
    torch.testing.assert_close(got, torch.sigmoid(model(x[None]))[0])
    got = predict_volume(model, x, roi_size=(16, 16, 16), multilabel=False)
    torch.testing.assert_close(got, torch.softmax(model(x[None]), 1)[0])
    torch.testing.assert_close(got.sum(0), torch.ones(16, 16, 16))


def test_flip_tta_averages_flipped_logits_as_nnunet_does():
    model = Positional()
    x = torch.randn(1, 16, 8, 8)
    plain = model(x[None])[0]
    flipped = model(x.flip(1)[None])[0].flip(1)
    got = predict_volume(model, x, roi_size=(16, 8, 8), multilabel=True, tta_axes=[0])
    torch.testing.assert_close(got, torch.sigmoid((plain + flipped) / 2))
    assert not torch.allclose(got, (torch.sigmoid(plain) + torch.sigmoid(flipped)) / 2, atol=1e-3)


@pytest.mark.parametrize("size, roi, overlap, starts", [
    (16, 16, 0.5, [0]),                   # one window
    (10, 16, 0.5, [0]),                   # padded up to the window
    (40, 16, 0.5, [0, 8, 16, 24]),        # ceil(24 / 8) + 1 = 4 windows, stride 24 / 3 = 8
    (41, 16, 0.5, [0, 6, 12, 19, 25]),    # ceil(25 / 8) + 1 = 5, stride 6.25: 0, 6.25, 12.5, 18.75, 25
    (41, 16, 0.0, [0, 12, 25]),           # side by side at most: ceil(25 / 16) + 1 = 3, stride 12.5
])
def test_window_starts_are_nnunets(size, roi, overlap, starts):
    assert nnunet_starts(size, roi, overlap) == starts


class Counting(nn.Module):
    """A pointwise model that counts the windows it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.windows = nn.Conv3d(1, 3, 1), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += x.shape[0]
        return self.conv(x)


def test_only_the_box_of_nonzero_voxels_is_tiled_and_outside_it_is_background():
    model = Counting()
    x = torch.zeros(1, 48, 40, 36)
    x[0, 10:26, 12:28, 5:21] = torch.randn(16, 16, 16)  # a 16³ box: one window covers it
    assert nonzero_box(x) == (slice(10, 26), slice(12, 28), slice(5, 21))
    got = predict_volume(model, x, roi_size=(16, 16, 16), multilabel=False)
    assert model.windows == 1
    inside = (slice(None), slice(10, 26), slice(12, 28), slice(5, 21))
    torch.testing.assert_close(got[inside], torch.softmax(model.conv(x[None]), 1)[0][inside])
    outside = torch.ones(48, 40, 36, dtype=torch.bool)
    outside[inside[1:]] = False
    assert (got[0][outside] == 1).all() and (got[1:][:, outside] == 0).all()
    regions = predict_volume(model, x, roi_size=(16, 16, 16), multilabel=True)
    assert (regions[:, outside] == 0).all()
    assert nonzero_box(torch.zeros(2, 5, 6, 7)) == (slice(0, 5), slice(0, 6), slice(0, 7))  # nothing: the grid


def test_volume_larger_than_window_is_blended_to_full_size():
    model = nn.Conv3d(2, 3, 1)
    x = torch.randn(2, 40, 24, 20)
    got = predict_volume(model, x, roi_size=(16, 16, 16), multilabel=True, overlap=0.5)
    # a pointwise model is translation-invariant: blending windows must reproduce it exactly
    torch.testing.assert_close(got, torch.sigmoid(model(x[None]))[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("value, expected", [("auto", "auto"), (1, 1), (8, 8), ("4", 4), (3.0, 3)])
def test_sw_batch_size_is_a_window_count_or_auto(value, expected):
    assert check_sw_batch_size(value) == expected


@pytest.mark.parametrize("value", [0, -2, "two", 1.5, True, None])
def test_bad_sw_batch_size_is_refused_naming_the_option(value):
    with pytest.raises(ValueError, match="sw_batch_size=.*positive number of windows per batch or 'auto'"):
        check_sw_batch_size(value)


def test_asa_predict_refuses_a_bad_window_batch_before_loading_anything(tmp_path):
    from asa.api import load_config, predict

    cfg = load_config("predict", f"checkpoint={tmp_path / 'missing.pt'}", f"input={tmp_path}", f"output={tmp_path}",
                      "sw_batch_size=two")
    with pytest.raises(ValueError, match="sw_batch_size='two'"):
        predict(cfg)


MIB = 2**20


@pytest.mark.parametrize("window, budget, expected", [
    (300 * MIB, 1000 * MIB, 3),        # floor(1000 / 300)
    (300 * MIB, 900 * MIB, 3),         # exactly three fit
    (300 * MIB, 899 * MIB, 2),
    (300 * MIB, 100 * MIB, 1),         # not even one fits: still one window at a time
    (1 * MIB, 80 * 1024 * MIB, SW_BATCH_CAP),
    (0, 1000 * MIB, SW_BATCH_CAP),     # a window that allocates nothing
])
def test_auto_window_batch_is_what_the_memory_budget_holds(window, budget, expected):
    assert window_batch_for_memory(window, budget) == expected


def test_auto_window_batch_on_cpu_is_one_without_probing():
    def probe():
        raise AssertionError("a CPU needs no probe")

    assert auto_sw_batch_size(probe, torch.device("cpu")) == 1
    model = nn.Conv3d(2, 3, 1)
    x = torch.randn(2, 40, 24, 20)
    torch.testing.assert_close(predict_volume(model, x, roi_size=(16, 16, 16), multilabel=True, sw_batch_size="auto"),
                               predict_volume(model, x, roi_size=(16, 16, 16), multilabel=True, sw_batch_size=1))


@pytest.mark.gpu
def test_auto_window_batch_on_cuda_fits_the_free_memory():
    model = nn.Conv3d(4, 8, 3, padding=1).cuda()
    window = torch.zeros(1, 4, 64, 64, 64, device="cuda")
    batch = auto_sw_batch_size(lambda: model(window), torch.device("cuda"))
    free, _ = torch.cuda.mem_get_info()
    assert 1 <= batch <= SW_BATCH_CAP
    assert batch == SW_BATCH_CAP or batch * 8 * 64**3 * 4 <= free  # each window's output alone fits


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc/self/status")
def test_full_size_brats_case_stays_within_memory_bound():
    """One 4×240×240×155 case with the tiny segmenter (64³ windows): peak RSS under 1.5 GiB. Windows
    side by side (overlap 0, 48 windows instead of overlap 0.25's 100): the whole-volume buffers set
    the peak, not the number of windows, and this test took up to 4 minutes on a loaded 2-core machine. One
    thread: beside the other xdist worker two threads took 63 s (alone, 24 s wall but 41 s of CPU, against 34 s
    for one thread; the peak is the same, 1.06-1.09 GiB)."""
    script = textwrap.dedent("""
        import torch
        from asa.eval.inference import predict_volume
        from asa.models import PRESETS, ASASegmenter
        torch.set_num_threads(1)
        enc = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}
        net = ASASegmenter(img_size=64, in_channels=4, out_channels=3, **enc).eval()
        probs = predict_volume(net, torch.randn(4, 240, 240, 155), roi_size=(64, 64, 64), multilabel=True,
                               overlap=0.0, sw_batch_size=1)
        assert probs.shape == (3, 240, 240, 155)
        print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))  # kB
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # VmHWM is this process's own peak: ru_maxrss would carry over the peak of the (large) test process
    # that spawned it, since Linux keeps the larger of the two across exec.
    peak_mib = int(proc.stdout.split()[-1]) / 1024
    assert peak_mib < 1536, f"peak RSS {peak_mib:.0f} MiB"


@pytest.mark.slow
def test_bf16_prediction_matches_fp32_labels_on_a_demo_case(tmp_path):
    """The asa-predict path under bf16 autocast gives the fp32 labels on >= 99 % of the voxels."""
    from asa.data import discover, get_task, preprocess_for_inference, write_demo_dataset
    from asa.eval.predict import Predictor
    from asa.models import PRESETS, ASASegmenter, channels_last_inference

    # 24 × 16 × 16: two 16³ windows blended along x (a CPU without native bf16 emulates it, voxel by voxel: small)
    root = write_demo_dataset("brats", tmp_path / "brats", cases=1, size=(24, 16, 16), seed=3)
    task = get_task("brats")
    image, _ = preprocess_for_inference(discover("brats", root)[0], task)
    assert image.shape[1:] == (24, 16, 16)
    torch.manual_seed(0)
    tiny = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}
    model = ASASegmenter(img_size=16, in_channels=4, out_channels=task.num_outputs, **tiny).eval()
    laid_out = copy.deepcopy(model)
    channels_last_inference(laid_out)  # what Predictor.from_checkpoint does for bf16 on a CPU
    labels = {}
    for name, net, dtype in (("fp32", model, None), ("bf16", model, torch.bfloat16),
                             ("bf16 channels-last", laid_out, torch.bfloat16)):
        # both windows in one batch: one at a time (auto on a CPU) sends these toy 32³ windows to PyTorch's
        # im2col conv3d (its oneDNN path starts at batch > 1 or C·D·H > 20480), several times slower; the window
        # batch does not change the blended probabilities (fp32: 1e-6 apart)
        probs = Predictor(net, task, (16, 16, 16), torch.device("cpu"), dtype)(image, sw_batch_size=2)
        assert probs.dtype == torch.float32
        labels[name] = torch.as_tensor(task.prediction_to_label(probs))
    fp32 = labels["fp32"]
    assert len(fp32.unique()) > 1  # not a trivially constant prediction
    assert (fp32 == labels["bf16"]).float().mean() >= 0.99
    assert (fp32 == labels["bf16 channels-last"]).float().mean() >= 0.99


class Local(nn.Module):
    """A fixed 3³ convolution (2 classes), plus a shift by the window's patch offset when it reads offsets."""

    def __init__(self, declared: Capabilities) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.linspace(-1, 1, 54).view(2, 1, 3, 3, 3))
            self.conv.bias.copy_(torch.tensor([0.1, -0.2]))
        self.capabilities = declared

    def forward(self, x: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x)
        if offsets is None:
            return out
        return out + (offsets.float() * torch.tensor([0.5, -1.0, 1.5])).sum(1).view(-1, 1, 1, 1, 1)


FRAME = Capabilities(offsets=True, patch_size=4, reference_grid=(2, 2, 2))


# the class-1 probability at five voxels, as predict_volume gave it before each network kind had its own engine
@pytest.mark.parametrize("declared, expected", [
    (Capabilities(), [0.0, 0.862639, 0.949361, 0.565221, 0.0]),  # nnU-Net's tiling: 0 outside the non-zero box
    (FRAME, [0.425557, 0.856578, 0.944551, 0.565221, 0.425557]),  # the brain frame's lattice, offsets read
])
def test_each_network_kind_predicts_what_it_did_before_its_engine_stood_apart(declared, expected):
    image = torch.zeros(1, 21, 18, 15)
    ramp = torch.arange(21 * 18 * 15, dtype=torch.float32).view(1, 21, 18, 15)
    image[:, 3:17, 2:15, 2:12] = torch.sin(ramp[:, 3:17, 2:15, 2:12])
    probs = predict_volume(Local(declared).eval(), image, roi_size=(8, 8, 8), multilabel=False, overlap=0.5,
                           tta_axes=(0,), sw_batch_size=2)
    got = [float(probs[1, i, j, k]) for i, j, k in ((0, 0, 0), (5, 4, 3), (10, 8, 6), (16, 14, 11), (20, 17, 14))]
    assert got == pytest.approx(expected, abs=2e-6)
