from __future__ import annotations

import copy
import math

import pytest
import torch

from asa.train import build_optimizer, lr_at, param_groups, scaled_lr
from tests.train.toy import ToyNet


def test_warmup_is_linear_then_cosine_reaches_min():
    kw = dict(total_steps=110, warmup_steps=10, base_lr=1.0, min_lr=0.1)
    assert [lr_at(s, **kw) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(500, **kw) == pytest.approx(0.1)  # clamped past the end


def test_poly_and_constant():
    assert lr_at(50, total_steps=100, warmup_steps=0, base_lr=0.01, schedule="poly", power=0.9) == pytest.approx(
        0.01 * 0.5**0.9
    )
    assert lr_at(7, total_steps=10, warmup_steps=0, base_lr=0.3, schedule="constant") == 0.3


def test_schedule_is_monotone_after_warmup():
    lrs = [lr_at(s, total_steps=50, warmup_steps=5, base_lr=1.0) for s in range(5, 51)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("kw, msg", [({"schedule": "step"}, "schedule"), ({"total_steps": 0}, "total_steps")])
def test_schedule_bad_arguments(kw, msg):
    args = dict(total_steps=10, warmup_steps=0, base_lr=1.0) | kw
    with pytest.raises(ValueError, match=msg):
        lr_at(0, **args)


def test_scaled_lr_linear_rule():
    assert scaled_lr(1.5e-4, 96) == pytest.approx(1.5e-4 * 96 / 256)
    assert scaled_lr(1.5e-4, 256) == pytest.approx(1.5e-4)
    with pytest.raises(ValueError, match="global_batch"):
        scaled_lr(1e-3, 0)


def test_no_decay_for_norms_biases_and_model_names():
    model = ToyNet()
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    free = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert decayed == {"fc1.weight", "fc2.weight"}
    assert free == {"pos", "norm.weight", "norm.bias", "fc1.bias", "fc2.bias"}


def test_no_decay_names_match_inside_a_wrapper():
    """A 2-D parameter named in no_weight_decay() is exempt only through name matching ("0.table"
    ends with ".table"), also when the network sits inside a wrapper."""
    inner = ToyNet()
    inner.table = torch.nn.Parameter(torch.zeros(4, 8))  # 2-D: the ndim rule cannot exempt it
    inner.no_weight_decay = lambda: {"pos", "table"}
    wrapper = torch.nn.Sequential(inner)
    wrapper.no_weight_decay = lambda: {"table"}
    names = {id(p): n for n, p in wrapper.named_parameters()}
    decayed, free = ({names[id(p)] for p in g["params"]} for g in param_groups(wrapper, 0.05))
    assert "0.table" in free and "0.table" not in decayed
    assert decayed == {"0.fc1.weight", "0.fc2.weight"}
    bare = {id(p): n for n, p in inner.named_parameters()}
    inner.no_weight_decay = lambda: set()
    assert "table" in {bare[id(p)] for p in param_groups(inner, 0.05)[0]["params"]}  # decayed without the name


def test_optimizer_recipes():
    adamw = build_optimizer(ToyNet(), name="adamw", lr=1e-3, weight_decay=0.05)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.95)
    sgd = build_optimizer(ToyNet(), name="sgd", lr=0.01, weight_decay=3e-5)
    assert sgd.defaults["momentum"] == 0.99 and sgd.defaults["nesterov"] is True
    assert math.isclose(sgd.param_groups[0]["weight_decay"], 3e-5)
    with pytest.raises(ValueError, match="optimizer name='adam'"):
        build_optimizer(ToyNet(), name="adam", lr=1e-3, weight_decay=0.0)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_optimizer_takes_one_fused_kernel_and_updates_as_the_loop(name):
    """On a CPU every parameter goes through torch's fused kernel; its update matches the reference
    per-parameter loop (same state, same gradients) to fp32 rounding."""
    torch.manual_seed(0)
    fused, loop = ToyNet(), ToyNet()
    loop.load_state_dict(fused.state_dict())
    start = [p.detach().clone() for p in fused.parameters()]
    opt = build_optimizer(fused, name=name, lr=1e-2, weight_decay=0.05)
    assert opt.defaults["fused"] is True and all(g["fused"] for g in opt.param_groups)
    kind = torch.optim.AdamW if name == "adamw" else torch.optim.SGD
    extra = {"betas": (0.9, 0.95)} if name == "adamw" else {"momentum": 0.99, "nesterov": True}
    ref = kind(param_groups(loop, 0.05), lr=1e-2, foreach=False, **extra)
    for _ in range(3):
        for net, o in ((fused, opt), (loop, ref)):
            for i, p in enumerate(net.parameters()):
                p.grad = torch.full_like(p, 0.01 * (i + 1)) + torch.linspace(-1, 1, p.numel()).view_as(p)
            o.step()
    for a, b in zip(fused.parameters(), loop.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert all(not torch.equal(a, b) for a, b in zip(fused.parameters(), start))  # every parameter moved


def test_optimizer_kernel_falls_back_to_foreach_off_cpu_and_cuda():
    from asa.train.optim import multi_tensor_kernel

    assert multi_tensor_kernel([torch.zeros(2)]) == {"fused": True}
    assert multi_tensor_kernel([{"params": [torch.zeros(2), torch.zeros(2, device="meta")]}]) == {"foreach": True}
    assert multi_tensor_kernel([torch.zeros(2, dtype=torch.int64)]) == {"foreach": True}


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_resumed_state_of_the_per_parameter_loop_keeps_the_fused_kernel(name):
    """A state saved by the loop (``fused: None``, as checkpoints written before the fused kernel) restores
    its moments, step and lrs, but the resumed optimiser keeps its own kernel; it then updates as the
    loop would have."""
    from asa.train.optim import load_optimizer_state

    torch.manual_seed(0)
    net, ref_net = ToyNet(), ToyNet()
    ref_net.load_state_dict(net.state_dict())
    kind = torch.optim.AdamW if name == "adamw" else torch.optim.SGD
    extra = {"betas": (0.9, 0.95)} if name == "adamw" else {"momentum": 0.99, "nesterov": True}
    old = kind(param_groups(ref_net, 0.05), lr=1e-2, foreach=False, **extra)

    def grads(model):
        for i, p in enumerate(model.parameters()):
            p.grad = torch.full_like(p, 0.01 * (i + 1)) + torch.linspace(-1, 1, p.numel()).view_as(p)

    grads(ref_net)
    old.step()
    saved = copy.deepcopy(old.state_dict())  # as read back from a checkpoint: no tensor shared with `old`
    assert all(g["fused"] is None for g in saved["param_groups"])
    net.load_state_dict(ref_net.state_dict())
    opt = build_optimizer(net, name=name, lr=5e-3, weight_decay=0.05)
    load_optimizer_state(opt, saved)
    assert all(g["fused"] is True for g in opt.param_groups)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in saved["param_groups"]]  # the saved lrs
    for o, model in ((opt, net), (old, ref_net)):
        grads(model)
        o.step()
    for a, b in zip(net.parameters(), ref_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_optimizer_state_of_a_run_that_still_trained_the_frozen_heads_is_read_without_them(capsys):
    """A resenc run written before its unused segmentation heads were frozen listed them in its optimiser's
    groups (never with a state: they had no gradient); it resumes with this version's groups, every other
    parameter's moments where they were."""
    from asa.models import build_network
    from asa.train.optim import load_optimizer_state

    def step(net, opt):
        torch.manual_seed(1)
        net.train()(torch.randn(1, 1, 32, 32, 32)).loss.backward()
        opt.step()
        opt.zero_grad()

    torch.manual_seed(0)
    net = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": 32}})
    frozen = [p for p in net.parameters() if not p.requires_grad]
    assert len(frozen) == 4
    for p in frozen:  # as the earlier version built it
        p.requires_grad_(True)
    old = build_optimizer(net, lr=1e-3, weight_decay=0.05)
    for p in frozen:
        p.requires_grad_(False)
    now = build_optimizer(net, lr=1e-3, weight_decay=0.05)
    step(net, old)
    saved = copy.deepcopy(old.state_dict())
    assert sum(len(g["params"]) for g in saved["param_groups"]) == sum(len(g["params"]) for g in now.param_groups) + 4
    with pytest.raises(ValueError, match="doesn't match the size"):
        load_optimizer_state(now, saved)  # without the model: torch's refusal
    load_optimizer_state(now, saved, net)
    assert "still listed 4 parameter(s) frozen now (decoder.seg_layers.0.weight" in capsys.readouterr().err
    for p in net.parameters():
        if p.requires_grad:
            assert torch.equal(now.state[p]["exp_avg"], old.state[p]["exp_avg"])
        else:
            assert p not in now.state
