"""Test-time crops of a case (issue #24): positions, crop 0 = the training crop, outputs averaged."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from asa.api.tasks.case.crops import case_crop_origins
from asa.api.tasks.case.dataset import build_case_crops_dataset
from asa.data import discover, write_demo_dataset
from asa.data.geometry import crop_at
from asa.data.preprocessing import PretrainPreprocess, case_to_item
from asa.api.tasks.case.outputs import case_output
from asa.models import Capabilities


@pytest.mark.parametrize("shape, centre, expected", [
    ((48, 48, 48), (23.5, 23.5, 23.5), [[-8, 0, 8]] * 3),  # 8 voxels of room per side: clipped to 8 (half is 16)
    ((80, 32, 32), (39.5, 15.5, 15.5), [[-16, 0, 16], [0], [0]]),  # half a crop along axis 0 only
    ((40, 32, 64), (20, 15.5, 40), [[0], [0], [-16, 0]]),  # axis 0: 5 / 3 voxels left, no whole patch; axis 2: 25 / 7
])
def test_crop_positions_cover_the_volume_on_the_lattice(shape, centre, expected):
    starts, offsets = case_crop_origins(shape, centre, (32, 32, 32), lattice=8)
    origin = np.floor(np.asarray(centre) - 15.5 + 0.5 + 1e-6).astype(int)
    want = sorted(np.array(np.meshgrid(*expected, indexing="ij")).reshape(3, -1).T.tolist(), key=lambda s: (any(s), s))
    assert (starts - origin).tolist() == want and offsets.tolist() == (np.asarray(want) // 8).tolist()
    assert offsets[0].tolist() == [0, 0, 0]  # the centred crop first
    assert (starts >= np.minimum(origin, 0)).all() and (starts + 32 <= np.maximum(np.asarray(shape), origin + 32)).all()
    centre_only = case_crop_origins(shape, centre, (32, 32, 32), lattice=8, crops="centre")
    assert centre_only[0].tolist() == [origin.tolist()] and centre_only[1].tolist() == [[0, 0, 0]]


def test_bad_crop_options():
    with pytest.raises(ValueError, match="crops='all'"):
        case_crop_origins((32,) * 3, (16,) * 3, (32,) * 3, lattice=8, crops="all")


class _Linear(nn.Module):
    """A stub case network: logits = W · (mean of each channel-quarter of the crop) + b; brain frame."""

    def __init__(self, out: int) -> None:
        super().__init__()
        self.img_size = (32, 32, 32)
        self.capabilities = Capabilities(offsets=True, crop_lattice=8)
        self.fc = nn.Linear(8, out)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(offsets)
        parts = x[:, 0].unflatten(1, (2, 16)).unflatten(3, (2, 16)).unflatten(5, (2, 16))  # [B, 2, 16, 2, 16, 2, 16]
        return self.fc(parts.mean((2, 4, 6)).flatten(1))


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    big = write_demo_dataset("bids", tmp_path_factory.mktemp("big"), cases=2, size=48, seed=0, targets=True)
    same = write_demo_dataset("bids", tmp_path_factory.mktemp("same"), cases=1, size=32, seed=0, targets=True)
    return discover("bids", big), discover("bids", same)


@pytest.mark.parametrize("kind", ["multiclass", "continuous"])
def test_the_output_is_the_mean_of_the_crops_outputs(cases, kind):
    big, same = cases
    torch.manual_seed(0)
    net = _Linear(3 if kind == "multiclass" else 1).eval()
    item = build_case_crops_dataset(big[:1], crop=32, lattice=8)[0]
    full = PretrainPreprocess(32).prepare(case_to_item(big[0], ("t1",)))
    starts, offsets = case_crop_origins(full["image"].shape[1:], full["centre"], (32,) * 3, lattice=8)
    assert len(starts) == item["image"].shape[0] > 1 and torch.equal(item["offset"], torch.from_numpy(offsets))
    crops = torch.from_numpy(np.stack([crop_at(full["image"], s, (32,) * 3) for s in starts]))
    assert torch.equal(item["image"], crops)
    with torch.no_grad():
        each = net(crops)
        want = each.softmax(1).mean(0) if kind == "multiclass" else each.view(-1).mean()
    net.seen.clear()
    got = case_output(net, item["image"], item["offset"], kind=kind, device=torch.device("cpu"))
    torch.testing.assert_close(got, want)
    assert torch.equal(torch.cat(net.seen), item["offset"])  # every crop got its patch offset
    # a volume no larger than the crop: exactly the single centred crop of fine-tuning
    one = build_case_crops_dataset(same, crop=32, lattice=8)[0]
    train_crop = PretrainPreprocess(32)(case_to_item(same[0], ("t1",)))["image"]
    assert one["image"].shape[0] == 1 and torch.equal(one["image"][0], train_crop)
    single = net(train_crop[None])
    want = single.softmax(1)[0] if kind == "multiclass" else single.view(())
    assert torch.equal(case_output(net, one["image"], one["offset"], kind=kind, device=torch.device("cpu")), want.detach())
