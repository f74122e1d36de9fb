"""Fused fine-tuning (`asa.api.finetune_fused`, `asa.train.fused`): a study's units (ResEnc, 32³ crops, batch 2)
trained as one end where each ends trained alone, to float rounding: the weights, the AdamW state, every logged loss
and the validation rounds (the group's validated as one); each run folder as its own command writes it; runs that
do not share their data or task settings refused."""

from __future__ import annotations

import math

import pytest
import torch

from asa.api.config import compose_config
from asa.api.finetune import finetune, finetune_fused
from asa.api.machinery.run import OptionError
from asa.api.tasks.segmentation import DiceValidator
from asa.data import write_demo_dataset
from asa.eval.predict import Predictor
from asa.io import load_checkpoint
from asa.train.reporting import TrainLog

UNIT = ["data=msd", "model=resenc", "model.size=tiny", "model.pretrained=null", "data.crop=32", "data.num_workers=0",
        "trainer.threads=1", "trainer.progress=false", "trainer.panel_every=0", "trainer.amp=off", "device=cpu",
        "trainer.epochs=4", "trainer.log_every=1", "trainer.val_every=2", "task.overlap=0", "seed=3",
        "data.split.ratios=[2,1,1]", "optim=adamw", "trainer.clip_grad=1.0"]
# two arms of a draw, as a scratch and a pretrained arm: their learning rates and starting weights differ (b starts
# from the weights a trained alone)
LR = {"a": 1e-3, "b": 3e-3}
ARMS = {arm: [f"optim.base_lr={lr}"] for arm, lr in LR.items()}
SCALARS = TrainLog.scalars
# of the larger of the tensor's largest weight and the farthest AdamW can move it (lr a step): a weight whose gradient
# is near zero, as a deep norm's bias on a few voxels, starts at 0 and moves by rounding noise AdamW scales up
WEIGHTS_RTOL = 5e-3
OUTPUT_RTOL = 1e-4
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_demo_dataset("msd", tmp_path_factory.mktemp("fused-data"), cases=4, size=32, seed=1)


def _logging(monkeypatch) -> dict:
    """Every logged scalar (but the throughput), by run folder."""
    logged: dict = {}

    def scalars(self, values, step):
        logged.setdefault(str(self.writer.log_dir), []).append(
            (step, {k: v for k, v in values.items() if k != "train/samples_per_s"}))
        return SCALARS(self, values, step)

    monkeypatch.setattr(TrainLog, "scalars", scalars)
    return logged


def _config(root, out, arm: str, start=None):
    own = [*ARMS[arm], *([f"model.pretrained={start}"] if start else [])]
    return compose_config("finetune", [*UNIT, *own, f"data.root={root}", f"output_dir={out / arm}"])


def _close(a: dict, b: dict, reach: float) -> float:
    """The largest difference of two state dicts' tensors over the larger of the tensor's largest magnitude and
    ``reach`` (how far AdamW's steps can move a weight: a step moves it by up to lr, rounding noise in its gradient
    included), but for a conv's bias that an instance norm cancels: its gradient is rounding noise, which AdamW scales
    up to a step of lr in either mode (`_outputs` compares what it cannot change)."""
    assert a.keys() == b.keys()
    cancelled = {a[k].data_ptr() for k in a if k.endswith(".conv.bias") and k.replace(".conv.bias", ".norm.weight") in a}
    return max(float((a[k].double() - b[k].double()).abs().max() / max(a[k].double().abs().max(), reach))
               for k in a if a[k].is_floating_point() and a[k].data_ptr() not in cancelled)


def _outputs(a: str, b: str) -> float:
    """The largest difference of two fine-tuning checkpoints' logits on one input over the logits' largest."""
    x = torch.randn(1, 4, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ya, yb = (Predictor.from_checkpoint(path, device=torch.device("cpu")).model.eval()(x) for path in (a, b))
    ya, yb = (y[0] if isinstance(y, (list, tuple)) else y for y in (ya, yb))
    return float((ya - yb).abs().max() / ya.abs().max())


@pytest.mark.slow  # two runs alone and fused: 4 steps, 2 validation rounds each (about 15 CPU-s)
def test_a_fused_unit_ends_within_rounding_of_its_own_command(root, tmp_path, monkeypatch):
    logged = _logging(monkeypatch)
    validated, of_units = [], DiceValidator.of_units  # each validation pass: the units it validates as one

    def counted(self, model, units):
        validated.append(units)
        return of_units(self, model, units)

    monkeypatch.setattr(DiceValidator, "of_units", counted)
    start = {"a": None, "b": tmp_path / "alone" / "a" / "checkpoints" / "last.pt"}
    alone = {arm: finetune(_config(root, tmp_path / "alone", arm, start[arm])) for arm in ARMS}
    assert validated == [1, 1, 1, 1]  # each run alone: its 2 rounds
    fused = dict(zip(ARMS, finetune_fused([_config(root, tmp_path / "fused", arm, start[arm]) for arm in ARMS])))
    assert validated == [1, 1, 1, 1, 2, 2]  # fused: a pass a round for both units, each case read once
    for arm in ARMS:
        a, b = (load_checkpoint(tmp_path / way / arm / "checkpoints" / "last.pt") for way in ("alone", "fused"))
        assert a["step"] == b["step"] == fused[arm].step == alone[arm].step == 4
        assert _close(a["model"], b["model"], reach=LR[arm] * 4) < WEIGHTS_RTOL  # 4 steps at most at the peak lr
        assert _outputs(*(tmp_path / way / arm / "checkpoints" / "last.pt" for way in ("alone", "fused"))) < OUTPUT_RTOL
        assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]  # lr, schedule
        assert all(float(s["step"]) == 4 for s in b["optimizer"]["state"].values())  # AdamW's own step count
        assert [h["step"] for h in a["history"]] == [h["step"] for h in b["history"]] == [2, 4]
        for ha, hb in zip(a["history"], b["history"]):
            assert hb.keys() == ha.keys() and all(math.isclose(ha[k], hb[k], rel_tol=1e-3, abs_tol=1e-4) for k in ha)
        series = [logged[str(tmp_path / way / arm / "tb")] for way in ("alone", "fused")]
        assert [s for s, _ in series[0]] == [s for s, _ in series[1]]
        for (_, va), (_, vb) in zip(*series):
            assert va.keys() == vb.keys()
            assert all(math.isclose(va[k], vb[k], rel_tol=LOSS_RTOL, abs_tol=1e-7) for k in va if "loss" in k)
        assert (tmp_path / "fused" / arm / "config.yaml").is_file() and (tmp_path / "fused" / arm / "splits.json").is_file()
    # the arms did differ: fused, each kept its own weights
    assert _close(load_checkpoint(tmp_path / "fused" / "a" / "checkpoints" / "last.pt")["model"],
                  load_checkpoint(tmp_path / "fused" / "b" / "checkpoints" / "last.pt")["model"], reach=1e-12) > 1e-2


def test_runs_that_do_not_share_their_data_are_refused_before_training(root, tmp_path):
    other = compose_config("finetune", [*UNIT, "seed=4", f"data.root={root}", f"output_dir={tmp_path / 'b'}"])
    with pytest.raises(OptionError, match="seed=4.*fused runs share it"):
        finetune_fused([_config(root, tmp_path, "a"), other])
    assert not (tmp_path / "a" / "checkpoints").exists()
    # the lead's loss and validation would train and score both: runs whose task settings differ are refused too
    other = compose_config("finetune", [*UNIT, "task.overlap=0.5", f"data.root={root}",
                                        f"output_dir={tmp_path / 'c'}"])
    with pytest.raises(OptionError, match="task.overlap differ.*fused runs share them"):
        finetune_fused([_config(root, tmp_path, "a"), other])
    assert not (tmp_path / "a" / "checkpoints").exists()


@pytest.mark.slow  # a fused pair stopped at its second step, resumed, and run through uninterrupted (about 20 CPU-s)
def test_a_stop_mid_group_saves_every_unit_and_the_same_runs_resume_to_the_uninterrupted_end(root, tmp_path,
                                                                                              monkeypatch):
    """SIGTERM during the group's second step: every unit saves last.pt at step 2 (the group stops as one), and the
    same configs with resume=auto end each unit where an uninterrupted fused run ends it, bit for bit."""
    import os
    import signal

    from asa.train.fused import Stacked

    whole = finetune_fused([_config(root, tmp_path / "whole", arm) for arm in ARMS])
    accumulate, calls = Stacked.accumulate, [0]

    def stopping(self, *args, **kwargs):  # the signal arrives during the second step, as a scheduler's would
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return accumulate(self, *args, **kwargs)

    monkeypatch.setattr(Stacked, "accumulate", stopping)
    stopped = finetune_fused([_config(root, tmp_path / "part", arm) for arm in ARMS])
    assert [r.preempted for r in stopped] == [True, True] and [r.step for r in stopped] == [2, 2]
    assert [load_checkpoint(tmp_path / "part" / arm / "checkpoints" / "last.pt")["step"] for arm in ARMS] == [2, 2]
    monkeypatch.setattr(Stacked, "accumulate", accumulate)
    resumed = finetune_fused([compose_config("finetune", [*UNIT, *ARMS[arm], f"data.root={root}", "resume=auto",
                                                          f"output_dir={tmp_path / 'part' / arm}"]) for arm in ARMS])
    assert [r.step for r in resumed] == [r.step for r in whole] == [4, 4]
    for arm in ARMS:
        a, b = (load_checkpoint(tmp_path / way / arm / "checkpoints" / "last.pt")["model"] for way in ("whole", "part"))
        assert all(torch.equal(a[k], b[k]) for k in a), arm


@pytest.mark.slow  # fused groups of 2 and 3 runs, 4 steps each (about 15 CPU-s)
def test_a_fused_step_reads_the_device_as_often_for_three_units_as_for_two(root, tmp_path, monkeypatch):
    """The units' updates read their values in one transfer (`asa.train.step.apply_steps`): a step that logs nothing
    reads the device as many times for 3 units as for 2 (the loader's reads, the same batches, besides)."""
    from asa.train.fused import FusedEngine
    from benchmarks.fusion_host import HostReads

    train_step, per_step = FusedEngine._train_step, []

    def counting(self, *args, **kwargs):
        with HostReads() as reads:
            train_step(self, *args, **kwargs)
        per_step[-1].append(reads.n)

    monkeypatch.setattr(FusedEngine, "_train_step", counting)
    quiet = [o.replace("trainer.log_every=1", "trainer.log_every=100") for o in UNIT]  # the last step logs alone
    for lrs in (("1e-3", "3e-3"), ("1e-3", "3e-3", "2e-3")):
        per_step.append([])
        finetune_fused([compose_config("finetune", [*quiet, f"optim.base_lr={lr}", f"data.root={root}",
                                                    f"output_dir={tmp_path / str(len(lrs)) / str(k)}"])
                        for k, lr in enumerate(lrs)])
    two, three = per_step
    assert len(two) == len(three) == 4
    assert two[:3] == three[:3]  # the steps that log nothing


@pytest.mark.parametrize("content, said", [
    (None, "cannot be read"),
    ("{runs", "not a group of runs (JSONDecodeError"),
    ('{"run": []}', "not a group of runs (KeyError"),
    ('{"runs": [["data=msd"]]}', 'runs is [["data=msd"]]; expected'),  # one run: no group
    ('{"runs": ["data=msd", "data=msd"]}', "runs is"),  # overrides, not a list of runs
    ('{"runs": [["data=msd"], ["data=msd", "data.bogus=1"]]}', "run 1's overrides do not compose: Could not override "
                                                              "'data.bogus'"),
])
def test_a_group_file_that_is_no_group_of_runs_is_refused_in_one_line_naming_it(tmp_path, capsys, content, said):
    from asa.cli import fused

    group = tmp_path / "group.json"
    if content is not None:
        group.write_text(content)
    with pytest.raises(SystemExit) as refused:
        fused.main([str(group)])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"[asa-study fused] refused: {group}: ") and said in err, err


def test_a_fused_group_writes_no_last_pt_while_any_unit_is_in_a_non_finite_streak(monkeypatch):
    """A group resumes together, from one step: at the cadence, one unit inside a non-finite streak holds every
    unit's last.pt back (each still keeps its kept steps' files); a stop or the run's end (``wait``) writes them all."""
    from types import SimpleNamespace

    from asa.train.engine import Engine
    from asa.train.fused import FusedEngine

    calls = []
    monkeypatch.setattr(Engine, "_save_last", lambda self, *files, wait=True: calls.append(("last", self.name)))
    monkeypatch.setattr(Engine, "_save_kept", lambda self, files: calls.append(("kept", self.name, tuple(files))))
    group = SimpleNamespace(units=[SimpleNamespace(name=name, nonfinite_run=n) for name, n in (("a", 0), ("b", 1))])
    FusedEngine._save_last(group, "kept_00000600.pt", wait=False)
    assert calls == [("kept", "a", ("kept_00000600.pt",)), ("kept", "b", ("kept_00000600.pt",))]
    calls.clear()
    FusedEngine._save_last(group, "kept_00000600.pt", wait=True)
    assert calls == [("last", "a"), ("last", "b")]
    calls.clear()
    group.units[1].nonfinite_run = 0
    FusedEngine._save_last(group, wait=False)
    assert calls == [("last", "a"), ("last", "b")]
