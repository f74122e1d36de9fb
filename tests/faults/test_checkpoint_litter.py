"""A process killed during a checkpoint write (SIGKILL, a lost node) leaves the writer's temporary file
(``checkpoints/.last.pt.<random>.tmp.pt``). The next start in the folder removes what it can prove is such litter — named
as asa's atomic writer names its temporaries, in the run's ``checkpoints/``, older than the lock it now holds — and says
so in one line; anything else stays, and the litter alone is no run that would refuse a start."""

from __future__ import annotations

import os
import time

from asa.io import load_checkpoint


def _plant(path, data: bytes, age_s: float) -> None:
    path.write_bytes(data)
    when = time.time() - age_s
    os.utime(path, (when, when))


def test_a_resume_removes_the_temporaries_of_a_killed_write_and_says_so(old_run, capsys):
    old_run.train(1, False)
    ckpts = old_run.dir / "checkpoints"
    torn = (ckpts / "last.pt").read_bytes()[:1000]
    litter = [ckpts / ".last.pt.k3j9x_2a.tmp.pt", ckpts / ".best.pt.0abc1234.tmp.pt"]
    for path in litter:
        _plant(path, torn, age_s=600)
    kept = [ckpts / ".last.pt.zz9yx8wv.tmp.pt",  # newer than the lock (a clock ahead, another writer): not provably stale
            ckpts / "notes.tmp.pt", ckpts / ".last.pt.part",  # not the writer's names
            old_run.dir / ".config.yaml.ab12cd34.tmp.yaml"]  # not in checkpoints/
    for path, age in zip(kept, (-3600, 600, 600, 600)):
        _plant(path, b"x", age_s=age)
    capsys.readouterr()
    old_run.train(2, True)
    said = [ln for ln in capsys.readouterr().err.splitlines() if "temporary" in ln]
    assert said == [f"[asa] removed 2 temporary file(s) that an interrupted checkpoint write left in {ckpts} "
                    f"(.best.pt.0abc1234.tmp.pt, .last.pt.k3j9x_2a.tmp.pt)"]
    assert not any(p.exists() for p in litter) and all(p.exists() for p in kept)
    assert load_checkpoint(ckpts / "last.pt")["step"] == 2


def test_a_run_killed_during_its_first_write_starts_again_in_its_folder(old_run, capsys):
    """Only the temporary of the first last.pt: no run to continue and none to protect, so ``resume=auto`` starts
    (it was refused as a folder that "already holds a run (.last.pt.<random>.tmp.pt)")."""
    (old_run.dir / "checkpoints").mkdir(parents=True)
    temporary = old_run.dir / "checkpoints" / ".last.pt.k3j9x_2a.tmp.pt"
    _plant(temporary, b"PK\x03\x04torn", age_s=60)
    old_run.train(1, "auto")
    assert "removed 1 temporary file(s)" in capsys.readouterr().err
    assert not temporary.exists() and load_checkpoint(old_run.dir / "checkpoints" / "last.pt")["step"] == 1
