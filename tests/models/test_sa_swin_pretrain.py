from __future__ import annotations

import pytest
import torch

from asa.models import SASwin, SymmetryAwareHead

TINY = dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4))


@pytest.mark.slow
def test_loss_is_the_sum_of_the_enabled_terms_and_trains():
    torch.manual_seed(0)
    head = SymmetryAwareHead(**TINY, drop_patch=8)
    out = head(torch.randn(2, 1, 32, 32, 32), torch.tensor([0.0, 1.0]))
    assert set(out.terms) == {"rotation", "contrastive", "reconstruction", "symmetry"}
    torch.testing.assert_close(out.loss, sum(out.terms.values()))
    assert out.reconstruction.shape == out.view.shape == (2, 1, 32, 32, 32)
    out.loss.backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


@pytest.mark.slow
def test_symmetry_term_follows_its_formula():
    torch.manual_seed(0)
    head = SymmetryAwareHead(**TINY, terms=("symmetry",), drop_ratio=0.0, drop_patch=8).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    y = torch.tensor([1.0, 0.0])
    torch.manual_seed(1)
    out = head(x, y)
    torch.manual_seed(1)  # the same rotations
    v1, _ = head.rotate(x)
    v2, _ = head.rotate(x)

    def g(v: torch.Tensor) -> torch.Tensor:
        return head.symmetry_head(head.swinViT(v, normalize=True)[4].mean((2, 3, 4)))

    def term(v: torch.Tensor) -> torch.Tensor:
        cos = torch.nn.functional.cosine_similarity(g(v), g(v.flip(2)), dim=1)
        return torch.nn.functional.binary_cross_entropy_with_logits(cos, 1 - y)

    with torch.no_grad():
        torch.testing.assert_close(out.terms["symmetry"], 0.5 * (term(v1) + term(v2)), atol=1e-5, rtol=1e-4)
    assert head.rotation_head is None and head.contrastive_head is None and head.reconstruction_head is None


def test_views_rotation_and_patch_dropout():
    torch.manual_seed(0)
    head = SymmetryAwareHead(**TINY, drop_ratio=0.25, drop_patch=8)
    x = torch.rand(3, 1, 32, 32, 32) + 1.0  # no zeros of its own
    rotated, k = head.rotate(x)
    for i in range(3):  # rotation in the plane of axes 1, 2 (lr axis 0 untouched), undone by -k
        torch.testing.assert_close(torch.rot90(rotated[i], -int(k[i]), dims=(2, 3)), x[i])
    dropped = head.patch_dropout(x)
    zero_cubes = (dropped == 0).view(3, 4, 8, 4, 8, 4, 8).all(dim=(2, 4, 6)).sum(dim=(1, 2, 3))
    assert zero_cubes.tolist() == [16, 16, 16]  # round(0.25 · 64) cubes each
    assert torch.equal(dropped[dropped != 0], x[dropped != 0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="terms"):
        SymmetryAwareHead(**TINY, terms=("rotation", "jigsaw"))
    with pytest.raises(ValueError, match="terms"):
        SymmetryAwareHead(**TINY, terms=())
    head = SymmetryAwareHead(**TINY, drop_patch=8)
    with pytest.raises(ValueError, match="at least 2"):
        head(torch.randn(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="divisible by 32"):
        head(torch.randn(2, 1, 48, 32, 32))
    with pytest.raises(ValueError, match="equal sides"):
        head(torch.randn(2, 1, 32, 32, 64))


def test_encoder_export_is_what_sa_swin_loads(tmp_path):
    head = SymmetryAwareHead(**TINY)
    torch.save({"encoder": head.encoder_state_dict()}, tmp_path / "encoder.pt")
    report = SASwin(2, 3, **TINY).load_pretrained(tmp_path / "encoder.pt", verbose=False)
    assert report.missing == [] and report.unexpected == []
    assert len(report.loaded) == len(head.encoder_state_dict())


def test_validation_groups_keep_at_least_a_pair():
    from asa.train.pretrain import validation_groups

    assert validation_groups(5, 2) == [[0, 1], [2, 3, 4]]
    assert validation_groups(4, 2) == [[0, 1], [2, 3]]
    assert validation_groups(1, 2) == [[0]]
    with pytest.raises(ValueError, match="group size"):
        validation_groups(3, 0)


@pytest.mark.slow
def test_sa_swin_validation_loss_does_not_depend_on_the_batch_split():
    """Fixed pairs (the tail joining the last one), each with its own views: the same value for any
    validation batch size, and no one-volume batch whose contrastive term is 0."""
    from asa.methods.sa_swin import sah_step
    from asa.train.distributed import DistEnv
    from asa.train.pretrain import make_validator
    from asa.train.rng import fork_rng

    torch.manual_seed(0)
    head = SymmetryAwareHead(**TINY, drop_patch=16).eval()
    data = [{"image": torch.randn(1, 32, 32, 32), "id": f"sub-{i}"} for i in range(3)]
    step = sah_step({})
    seen = []

    def recording(model, batch):
        loss, logs = step(model, batch)
        seen.append((batch["image"].shape[0], float(logs["sah/contrastive"])))
        return loss, logs

    values = []
    for batch_size in (1, 2, 3):
        validate = make_validator(data, batch_size=batch_size, env=DistEnv(), step_fn=recording, group_size=2)
        with fork_rng(7), torch.no_grad():  # the engine seeds validation the same way every round
            values.append(validate(head)["loss"])
    assert values[0] == values[1] == values[2]
    assert all(size == 3 and contrastive > 0 for size, contrastive in seen)  # one group of 3, never a lone volume
    with fork_rng(7), torch.no_grad():  # plain batches of 2 leave a lone tail volume without a contrastive term
        make_validator(data, batch_size=2, env=DistEnv(), step_fn=recording)(head)
    assert seen[-1] == (1, 0.0)
