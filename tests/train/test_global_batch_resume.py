"""A resume is refused when its global batch (trainer.batch_size × processes × trainer.accum_steps) differs from the
checkpoint's, as the keys of resume_must_match are (``trainer.global_batch`` among them): the steps per epoch, the
schedule and the data order follow it. Another split of the same batch over nodes and processes resumes; leaving the
key out of resume_must_match asks for the new batch."""

from __future__ import annotations

import pytest

from asa.api.config import compose_config
from asa.io import save_checkpoint
from asa.train import IncompatibleCheckpointError, check_training_checkpoint
from asa.train.checkpoint import FORMAT, RESUME_ONLY, VERSION
from asa.train.resume import GLOBAL_BATCH


def _trainer(batch: int, accum: int = 1) -> dict:
    return {"trainer": {"batch_size": batch, "accum_steps": accum}}


@pytest.fixture
def last(tmp_path):
    """last.pt of a run on 2 processes of 2 volumes each: a global batch of 4."""
    return save_checkpoint(tmp_path / "last.pt", {"format": FORMAT, "version": VERSION, "world_size": 2,
                                                  "config": _trainer(2), **{key: {} for key in RESUME_ONLY}})


@pytest.mark.parametrize("app", ["pretrain", "finetune"])
def test_the_global_batch_is_among_the_keys_a_resume_must_match(app):
    assert GLOBAL_BATCH in compose_config(app, []).resume_must_match


@pytest.mark.parametrize("world_size, batch, accum", [(2, 2, 1), (4, 1, 1), (1, 4, 1), (1, 2, 2)])
def test_the_same_global_batch_on_other_processes_resumes(last, world_size, batch, accum):
    check_training_checkpoint(last, _trainer(batch, accum), [GLOBAL_BATCH], world_size=world_size)


def test_another_global_batch_is_refused_unless_asked(last):
    with pytest.raises(IncompatibleCheckpointError, match=(
            rf"^cannot resume from {last}: its global batch was 4 \(trainer.batch_size=2 × 2 process\(es\) × "
            r"trainer.accum_steps=1\), this start's is 2 \(trainer.batch_size=2 × 1 process\(es\) × "
            r"trainer.accum_steps=1\); .* leave trainer.global_batch out of resume_must_match")):
        check_training_checkpoint(last, _trainer(2), [GLOBAL_BATCH], world_size=1)
    check_training_checkpoint(last, _trainer(2), [], world_size=1)  # asked: the key left out
