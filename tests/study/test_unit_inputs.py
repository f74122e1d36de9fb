"""asa-study plans without writing: its checks are a pure function (nothing written, nothing said), and the data the
pretraining units read (each cohort's file list, the negative control's noise volumes) are the units' inputs, written
as the first unit reading them starts and kept once complete."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from asa.data import discover
from asa.data.synthetic.demo import write_demo_dataset
from asa.study import cohort as cohort_module
from asa.study import study
from asa.study.checks import cohort_check_record
from asa.study.cohort import CohortList, NoiseVolumes, cohort_lists, noise_volumes
from asa.study.common import Clock
from asa.study.runs import plan_arms, supervised_channel
from asa.study.scheduler import JsonFile, Unit, run_units
from asa.study.settings import Study


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> tuple[Path, Path]:
    """A 4-case BIDS cohort and a 9-case labeled MSD set (the quick scale's fixed split with --test 3)."""
    base = tmp_path_factory.mktemp("inputs")
    return (write_demo_dataset("bids", base / "cohort", cases=4, size=16, seed=5),
            write_demo_dataset("msd", base / "labeled", cases=9, size=16, seed=1))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_the_checks_write_and_say_nothing_and_hand_the_units_their_inputs(sets, tmp_path, capsys):
    cohort, labeled = sets
    out = tmp_path / "study"
    args = study.build_parser().parse_args(["--pretrain-data", str(cohort), "--data", "msd", "--root", str(labeled),
                                            "--out", str(out), "--scale", "quick", "--test", "3", "--network",
                                            "resenc-tiny", "--arms", "mae", "noise", "supervised"])
    s = Study.from_args(args, {})
    labeled_cases, split, task = study._labeled_set(s)
    cohort_cases, held, channels, store = study._pretraining_cohort(s, task)
    record, made = cohort_check_record(out, cohort_cases)
    assert made and sorted(record["cases"]) == sorted(c.id for c in cohort_cases)
    checks, cohorts, noise = study._checks(s, labeled_cases, split, task, cohort_cases, record, held, channels,
                                           store, supervised_channel(task.channels, channels))
    assert not out.exists() and capsys.readouterr().out == ""  # nothing written, nothing said
    assert checks.lines()[0].startswith("Primary endpoint")
    assert cohorts == cohort_lists(out, cohort_cases, [4], 0, channels)
    assert noise == noise_volumes(out, cohort_cases, 4, 0, channels)
    planned = plan_arms(out, s.scale, s.network, s.arms, split, cohorts, noise, data=s.data, root=s.root, seed=0,
                        channels=channels)
    runs = planned.pretraining
    assert not out.exists()  # planning writes nothing
    assert [r.name for r in planned.labeled] == ["supervised"]
    # every run of an arm reads its cohort's list, every run of the negative control the one set of volumes
    assert {r.name: r.inputs for r in runs} == {"mae-c4": (cohorts[4],), "mae-c4-p1": (cohorts[4],),
                                                "noise-c4": (noise,), "noise-c4-p1": (noise,)}
    assert all(f"data.root={r.inputs[0].folder}" in r.overrides for r in runs)


def test_a_cohort_list_is_written_whole_where_missing_or_other_and_kept_where_it_is(tmp_path):
    folder = tmp_path / "data" / "cohort-2"
    listed = CohortList(folder, "id,path\na,/a.nii.gz\nb,/b.nii.gz\n")
    listed.write()
    file = folder / "files.csv"
    assert file.read_text() == listed.text and _files(tmp_path) == [file]  # no temporary left beside it
    kept = file.stat()
    listed.write()  # a second unit reading it starts: the list is kept, not written again
    assert (file.stat().st_ino, file.stat().st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    file.write_text("id,path\na,/a.nii.gz\n")  # a list of other cases (the cohort changed): written afresh
    listed.write()
    assert file.read_text() == listed.text


def test_the_noise_volumes_are_written_once_and_afresh_after_a_stopped_write(sets, tmp_path, monkeypatch):
    cohort, _ = sets
    cases = discover("bids", cohort)
    noise = noise_volumes(tmp_path, cases, 2, seed=0, channels=["t1"])
    assert noise.folder == tmp_path / "data" / "noise-2" and noise.seed == 7919 and noise.channels == ("t1",)
    calls = []
    real = cohort_module.write_noise_dataset
    monkeypatch.setattr(cohort_module, "write_noise_dataset", lambda *a, **k: calls.append(k) or real(*a, **k))
    noise.write()
    rows = (noise.folder / "files.csv").read_text().splitlines()
    assert rows[0] == "id,path" and len(rows) == 3 and (noise.folder / ".complete").is_file()
    written = {p: p.read_bytes() for p in _files(noise.folder)}
    noise.write()  # the second noise run starts: the volumes are complete, kept as they are
    assert len(calls) == 1 and {p: p.read_bytes() for p in _files(noise.folder)} == written
    (noise.folder / ".complete").unlink()  # a write stopped before its end: written again, whole
    noise.write()
    assert len(calls) == 2 and {p: p.read_bytes() for p in _files(noise.folder)} == written


class _Refused:
    """An input that must not be written (its unit is done)."""

    def write(self) -> None:
        raise AssertionError("a done unit's input was written")


@pytest.mark.slow  # units run as child processes
def test_a_unit_s_inputs_are_written_as_it_starts_and_a_shared_list_by_the_first(tmp_path):
    """Two units read one cohort list: each finds it whole as it starts (its process checks it), the second start
    leaves it as the first wrote it; a done unit's inputs are never written."""
    listed = CohortList(tmp_path / "cohort", "id,path\na,/a.nii.gz\n")
    split = JsonFile(tmp_path / "run" / "splits.json", {"train": ["a"], "val": [], "test": []})

    def unit(name: str, *inputs) -> Unit:
        result = tmp_path / name
        code = (f"import os; s = os.stat({str(listed.folder / 'files.csv')!r}); "
                f"assert open({str(listed.folder / 'files.csv')!r}).read() == {listed.text!r}; "
                f"open({str(result)!r}, 'w').write(str((s.st_ino, s.st_mtime_ns)))")
        return Unit(name, (sys.executable, "-c", code), result.is_file, tmp_path / "logs" / f"{name}.log",
                    inputs=inputs)

    done = Unit("done", (sys.executable, "-c", "raise SystemExit(1)"), lambda: True, tmp_path / "logs" / "done.log",
                inputs=(_Refused(),))
    assert run_units([unit("a", listed, split), done, unit("b", listed)], 1, Clock(None), {})
    assert (tmp_path / "a").read_text() == (tmp_path / "b").read_text()  # the list b met is the one a met
    assert json.loads(split.path.read_text()) == split.content
