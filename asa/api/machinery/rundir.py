"""The run directory's rules: one writer (a lock file), no silent overwrite, a config history on resume.

A new run refuses an ``output_dir`` that already holds checkpoints unless it resumes
(``resume=true|auto|PATH``) or asks ``overwrite=true``, which moves the old run aside to
``<output_dir>.replaced-<timestamp>`` (nothing is deleted). Every check runs before anything is
written; the config is written by `RunDir.write_config` once the caller's own checks passed too.
A resumed run keeps ``config.yaml`` as first written and appends what changed to
``config_history.yaml``. Refusals name the command that continues and the one that starts fresh.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from asa.api.configuration.compat import added_settings, current_config, moved_key, removed_key, version_refusal
from asa.api.configuration.schema import pretrain_family
from asa.io import atomic_write_text, is_atomic_temporary, is_temporary
from asa.io.atomic import WriteError
from asa.io.writable import CANNOT_WRITE, cannot_write, check_writable as io_check_writable
from asa.train.checkpoint import flatten
from asa.train.distributed import DistEnv, all_gather_objects
from asa.train.environment import record_environment
from asa.train.resume import ResumePoint, check_training_checkpoint

__all__ = ["RunDirError", "RunDir", "RunLock", "LOCK_NAME", "aside_path", "check_writable", "command_line", "launcher",
           "LAUNCH_ENV", "held_refusal", "move_aside", "move_files_aside", "override", "prepare_run_dir", "shell_path",
           "sweep_temporaries"]

LOCK_NAME = "run.lock"
HISTORY_NAME = "config_history.yaml"
COMMAND_NAME = "command.txt"  # the command line that started the run
LAUNCH_ENV = "ASA_TORCHRUN_RENDEZVOUS"  # the rendezvous options asa-torchrun was given, shell words (asa.cli.launch)


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked; nothing was written."""


def launcher(app: str) -> str:
    """The words that start ``app`` as this process was started: under torchrun (its ``LOCAL_WORLD_SIZE``
    and ``WORLD_SIZE``), ``asa-torchrun --nproc_per_node=N -m <the script's module>`` (``--nnodes=M`` too on
    several nodes, and the rendezvous options asa-torchrun was given: `LAUNCH_ENV`), so that a printed command
    runs the job on as many processes as it had (its schedule and global batch depend on it) and finds the
    other nodes where they wait; else ``app``."""
    local, world = os.environ.get("LOCAL_WORLD_SIZE"), os.environ.get("WORLD_SIZE")
    if not (local and world and local.isdigit() and world.isdigit() and int(local) > 0):
        return app
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = main.name if main is not None and main.name.startswith("asa.cli.") else \
        f"asa.cli.{app.removeprefix('asa-').replace('-', '_')}"
    nodes = int(world) // int(local)
    rendezvous = os.environ.get(LAUNCH_ENV)  # shell words already
    return " ".join(["asa-torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else []), f"--nproc_per_node={local}",
                     *([rendezvous] if rendezvous else []), "-m", module])


def command_line(app: str, *, drop: Sequence[str] = ("resume", "overwrite")) -> str:
    """``app`` (as it was launched: `launcher`) followed by this job's command-line overrides (Hydra's),
    without the keys in ``drop``."""
    overrides: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            overrides = list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        pass
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in drop]
    return " ".join([launcher(app), *(shlex.quote(o) for o in kept)])


def _started_by(command: str) -> str:
    """``command.txt``: the command line of a console-script run, or for a run started from Python (no command
    line to repeat) which function ran it, its configuration being ``config.yaml``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return command + "\n"
    except ImportError:
        pass
    words = command.split()
    app = f"asa-{words[words.index('-m') + 1].rsplit('.', 1)[-1]}" if "-m" in words else words[0]  # `launcher`'s
    return f"{app} run from Python (asa.api.{app.removeprefix('asa-')}) with the configuration in config.yaml\n"


def override(key: str, value: Any) -> str:
    """``key=value`` as a command-line override that pastes into a shell and that Hydra reads back as
    ``value``: quoted for Hydra where its grammar needs it (non-ASCII, brackets, commas, quotes), then
    for the shell (spaces, ``$``, quotes)."""
    text = f"{key}={value}"
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_override(text).value()
        plain = isinstance(parsed, str) and parsed == str(value)
    except Exception:  # Hydra's parser refuses it as it stands
        plain = False
    if not plain:  # Hydra's quoted form: a backslash only escapes before a quote (or at the end)
        escaped = re.sub(r"(\\+)('|$)", lambda m: m.group(1) * 2 + m.group(2), str(value)).replace("'", "\\'")
        text = f"{key}='{escaped}'"
    if "'" in text and not any(c in text for c in '"$`\\!'):
        return f'"{text}"'  # reads better than shlex's '...'"'"'...'
    return shlex.quote(text)


def shell_path(path: str | os.PathLike) -> str:
    """A path as a shell word (quoted when it holds spaces or other special characters)."""
    return shlex.quote(str(path))


def _with_output_dir(cmd: str, out_dir: Path) -> str:
    """``cmd`` with output_dir=... replaced (or added)."""
    parts = [p for p in shlex.split(cmd) if not p.startswith("output_dir=")]
    return " ".join([*(shlex.quote(p) for p in parts), override("output_dir", out_dir)])


def _cannot_write(option: str, folder: Path, err: OSError) -> RunDirError:
    """The refusal of a folder that cannot be created or written (read-only, no permission, disk full)."""
    return RunDirError(cannot_write(option, folder, err))


def check_writable(folder: str | os.PathLike, option: str) -> None:
    """Refuse (`RunDirError`, as `prepare_run_dir` refuses its ``output_dir``) a folder a job cannot write
    (`asa.io.writable.check_writable`: nothing is created)."""
    try:
        io_check_writable(folder, option)
    except WriteError as err:
        raise RunDirError(err.strerror) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``<output_dir>/run.lock`` holding host, PID, start time and command of the one job writing there;
    ``option`` names the folder's setting in the refusal (``data.store`` for a store)."""

    def __init__(self, folder: Path, option: str = "output_dir") -> None:
        self.path = Path(folder) / LOCK_NAME
        self.option = option
        self.held = False

    def _create(self, command: str) -> bool:
        info = {"host": socket.gethostname(), "pid": os.getpid(),
                "started": datetime.datetime.now().isoformat(timespec="seconds"), "command": command}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
            fh.write("\n")
        self.held = True
        return True

    def holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"host": "?", "pid": -1, "started": "?", "command": "? (unreadable lock file)"}

    def acquire(self, command: str) -> None:
        """Take the lock; a stale lock (dead process on this host) is taken over with a message."""
        for _ in range(3):
            if self._create(command):
                return
            info = self.holder()
            if info is None:
                continue  # released meanwhile
            same_host = info.get("host") == socket.gethostname()
            pid = int(info.get("pid", -1))
            if same_host and pid > 0 and not _pid_alive(pid):
                if self.holder() == info:  # nobody took it over meanwhile
                    print(f"[asa] taking over the stale lock {self.path}: its job (pid {pid} on {info.get('host')}, "
                          f"started {info.get('started')}) is no longer running", file=sys.stderr, flush=True)
                    self.path.unlink(missing_ok=True)
                continue
            where = "on this host" if same_host else f"on host {info.get('host')}"
            raise RunDirError(
                f"{self.option}={self.path.parent} is in use by another job: pid {pid} {where}, started "
                f"{info.get('started')} ({info.get('command')}). Wait for it to finish or use another {self.option}. "
                f"If that job is gone (e.g. its host went down), delete {self.path} and rerun."
            )
        raise RunDirError(f"could not take the lock {self.path}: it keeps changing (several jobs starting at once?)")

    def release(self) -> OSError | None:
        """Remove the lock file; returns the error when it cannot be (a folder turned read-only): the file stays, and
        the next job on this host takes it over once this process has ended (`acquire`)."""
        if not self.held:
            return None
        self.held = False
        info = self.holder()
        if info is not None and int(info.get("pid", -1)) == os.getpid():
            try:
                self.path.unlink(missing_ok=True)
            except OSError as err:
                return err
        return None


@dataclass
class RunDir:
    """A checked run directory: the checkpoint it continues from (None: a fresh run) and the lock (rank 0)."""

    path: Path
    resume: ResumePoint | None
    lock: RunLock | None
    command: str
    moved_to: Path | None = None
    invocation: str = ""  # the full command line, resume=... included
    created: bool = False  # the folder did not exist before this run (rank 0)

    def write_config(self, resolved: Mapping[str, Any]) -> None:
        """Fresh run: ``config.yaml``. Resumed run: ``config.yaml`` stays; what differs from it (and
        when, and from which checkpoint) is appended to ``config_history.yaml``. Either way this start's
        software (``environment.json``: `asa.train.environment`) is appended. Rank 0 only."""
        if self.lock is None:
            return
        text = OmegaConf.to_yaml(OmegaConf.create(_plain(resolved)))
        record = self.path / "config.yaml"
        # torch / CUDA / cuDNN / NCCL / GPUs / asa commit of this start, appended on resume
        record_environment(self.path, resumed_from=str(self.resume.path) if self.resume is not None else None)
        if self.resume is None or not record.is_file():
            atomic_write_text(record, text)
            atomic_write_text(self.path / COMMAND_NAME, _started_by(self.invocation or self.command))  # cited by cards
            return
        first = yaml.safe_load(record.read_text()) or {}
        before, now = flatten(first), flatten(_plain(resolved))
        changes = {k: {"was": before.get(k, "<missing>"), "now": now.get(k, "<missing>")}
                   for k in sorted(before.keys() | now.keys()) if before.get(k, "<missing>") != now.get(k, "<missing>")}
        history_path = self.path / HISTORY_NAME
        history = (yaml.safe_load(history_path.read_text()) or []) if history_path.is_file() else []
        history.append({"time": datetime.datetime.now().isoformat(timespec="seconds"),
                        "command": self.invocation or self.command,
                        "resumed_from": str(self.resume.path), "changes": changes})
        atomic_write_text(history_path, yaml.safe_dump(history, sort_keys=False))

    def release(self, *, refused: bool = False) -> OSError | None:
        """Give the lock back (returns `RunLock.release`'s error when the lock file could not be removed); with
        ``refused`` (a check after the lock refused the run) also remove the folder when this run created it and
        left nothing in it."""
        if self.lock is None:
            return None
        left = self.lock.release()
        if refused and left is None and self.created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()
        return left


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def sweep_temporaries(folder: Path, lock: RunLock, writes: str = "checkpoint", stage: str | None = None) -> None:
    """Remove from ``folder`` the temporary files of ``writes`` writes that a killed process left (SIGKILL, a lost
    node): named as asa's atomic writer names them, or any file in its subfolder ``stage`` (where files are written
    to be renamed into ``folder``), and older than ``lock``, which this job holds, so no job is writing them now.
    Said in one line."""
    if not folder.is_dir():
        return
    since = lock.path.stat().st_mtime
    found = [p for p in folder.iterdir() if is_atomic_temporary(p)]
    if stage is not None and (folder / stage).is_dir():
        found += list((folder / stage).iterdir())
    litter = sorted(p for p in found if p.is_file() and p.stat().st_mtime < since)
    for path in litter:
        path.unlink(missing_ok=True)
    if litter:
        print(f"[asa] removed {len(litter)} temporary file(s) that an interrupted {writes} write left in {folder} "
              f"({', '.join(str(p.relative_to(folder)) for p in litter)})", file=sys.stderr, flush=True)


def _checkpoints(out_dir: Path) -> list[Path]:
    folder = out_dir / "checkpoints"
    return sorted(p for p in folder.glob("*.pt") if not is_temporary(p)) if folder.is_dir() else []


def _resume_mode(resume: Any) -> str | Path:
    """The ``resume`` option: ``"false"``, ``"true"``, ``"auto"`` or a checkpoint path."""
    if resume is None or resume is False or str(resume).lower() in {"false", "no", ""}:
        return "false"
    if resume is True or str(resume).lower() in {"true", "yes"}:
        return "true"
    if str(resume).lower() == "auto":
        return "auto"
    return Path(str(resume)).expanduser()


def aside_path(path: Path) -> Path:
    """``<path>.replaced-<YYYYmmdd-HHMMSS>`` beside ``path``, ``-2``, ``-3``, ... after it while that name is taken:
    where replaced results go (never deleted)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside, n = path.with_name(f"{path.name}.replaced-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
    return aside


def move_aside(out_dir: Path) -> Path:
    """Rename ``out_dir`` to `aside_path` of it (never deletes); returns the new path."""
    aside = aside_path(out_dir)
    os.rename(out_dir, aside)
    return aside


def move_files_aside(out_dir: Path, names: Sequence[str]) -> Path:
    """Move the files ``names`` of ``out_dir`` into a new folder `aside_path` of it (never deletes; ``out_dir`` itself
    stays, since it may hold other things: the working folder, the predictions scored); returns that folder."""
    aside = aside_path(out_dir)
    aside.mkdir()
    for name in names:
        os.replace(out_dir / name, aside / name)
    return aside


def held_refusal(out: Path, held: Sequence[str], *, app: str, what: str, by: str = "",
                 moved: str = "the old folder is moved", more: Sequence[str] = ()) -> str:
    """The refusal of ``output={out}`` holding earlier results of ``app``: ``what`` they are, their files ``held``
    (four named) and ``by`` whom, and the commands that write elsewhere or replace them (``overwrite=true``:
    ``moved`` to ``<output>.replaced-<time>``), then the lines ``more``. Nothing was written."""
    shown = ", ".join(held[:4]) + (f", ... ({len(held)} files)" if len(held) > 4 else "")
    return (f"output={out} already holds {what} ({shown}{by}); writing there would replace or mix them, so nothing "
            f"was written.\n"
            f"  write elsewhere:        {command_line(app, drop=('output', 'overwrite', 'resume'))} "
            f"{override('output', f'{out}-new')}\n"
            f"  replace them ({moved} to {out.name}.replaced-<time>): ... overwrite=true"
            + "".join(f"\n  {line}" for line in more))


def _check_saved_config(record: Path) -> None:
    """Refuse to resume into a folder whose ``config.yaml`` (the run config a resumed run keeps and compares
    with) this asa cannot read: not YAML, not a mapping, or a ``version`` it does not read (`version_refusal`:
    newer, or none asa writes). No ``config.yaml`` (a run refused before writing one): nothing to check."""
    if not record.is_file():
        return
    try:
        saved = yaml.safe_load(record.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise RunDirError(f"cannot resume: {record} is unreadable ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}). Nothing was changed.") from None
    if not isinstance(saved, Mapping):
        raise RunDirError(f"cannot resume: {record} is unreadable: it holds {type(saved).__name__}, not a run config "
                          "(a mapping of settings). Nothing was changed.")
    if (why := version_refusal(saved.get("version", 0))) is not None:
        raise RunDirError(f"cannot resume: {record} has {why}. Nothing was changed.")


def _check(out_dir: Path, *, app: str, resume: Any, overwrite: bool, run_config: Mapping, compat_keys: Sequence[str],
           lock: RunLock, command: str, world_size: int = 1) -> tuple[ResumePoint | None, Path | None]:
    """Rank 0's checks with the lock held: the one place that decides which checkpoint a run continues
    from and checks it (read once); returns (resume point, moved_to)."""
    mode = _resume_mode(resume)
    cont = f"{command} resume=true"
    fresh = f"{_with_output_dir(command, out_dir.with_name(out_dir.name + '-new'))}"
    if overwrite and mode != "false":
        raise RunDirError(f"overwrite=true starts a new run and cannot be combined with resume={resume}; "
                          f"to continue the run in {out_dir}: {cont}")
    existing = _checkpoints(out_dir)
    last = out_dir / "checkpoints" / "last.pt"
    if mode == "true" and not last.is_file():
        raise RunDirError(
            f"resume=true but {last} does not exist: there is nothing to continue in output_dir={out_dir}. "
            + (f"It holds {', '.join(p.name for p in existing)}; start a new run elsewhere: {fresh}"
               if existing else f"Start the run: {command}  (or use resume=auto, which starts it when no last.pt exists)")
        )
    resume_from: Path | None = None
    if mode == "true" or (mode == "auto" and last.is_file()):
        resume_from = last
    elif isinstance(mode, Path):
        if not mode.is_file():
            raise RunDirError(f"resume={mode}: no such checkpoint file")
        resume_from = mode
    moved_to = None
    if resume_from is None and existing:
        if not overwrite:
            raise RunDirError(
                f"output_dir={out_dir} already holds a run ({', '.join(p.name for p in existing)}); a new run "
                f"there would replace it, so nothing was started and nothing was changed.\n"
                f"  continue that run:  {cont}\n"
                f"  start a new run:    {fresh}\n"
                f"  or start anew in the same folder, moving the old run to {out_dir.name}.replaced-<time>: "
                f"{command} overwrite=true"
            )
        lock.release()
        moved_to = move_aside(out_dir)
        (moved_to / LOCK_NAME).unlink(missing_ok=True)
        out_dir.mkdir(parents=True)
        lock.acquire(command)
        print(f"[asa] overwrite=true: moved the previous run to {moved_to}", file=sys.stderr, flush=True)
    if resume_from is None:
        sweep_temporaries(out_dir / "checkpoints", lock)
        return None, moved_to
    _check_saved_config(out_dir / "config.yaml")
    family = pretrain_family(run_config.get("model")) if app == "asa-pretrain" and "model" in run_config else None
    point = check_training_checkpoint(resume_from, run_config, compat_keys, moved=moved_key, current=current_config,
                                      removed=removed_key, added=added_settings, family=family, app=app,
                                      world_size=world_size)
    sweep_temporaries(out_dir / "checkpoints", lock)  # the run goes ahead
    return point, moved_to


def prepare_run_dir(
    out_dir: str | os.PathLike,
    *,
    app: str,
    resume: Any,
    overwrite: bool,
    run_config: Mapping[str, Any],
    compat_keys: Sequence[str],
    env: DistEnv,
) -> RunDir:
    """Lock and check ``out_dir`` on rank 0 (the other ranks wait and learn the outcome); raises
    `RunDirError` / `IncompatibleCheckpointError` on every rank when rank 0 refuses, leaving the
    folder as it was. A resumed run's `RunDir.resume` is what `asa.train.Engine` continues from."""
    out_dir = Path(out_dir).expanduser().absolute()
    command = command_line(app)
    lock = None
    if env.is_main:
        created = not out_dir.exists()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            lock = RunLock(out_dir)
            lock.acquire(command)
            resume_point, moved_to = _check(out_dir, app=app, resume=resume, overwrite=overwrite,
                                            run_config=run_config, compat_keys=compat_keys, lock=lock, command=command,
                                            world_size=env.world_size)
        except Exception as err:
            if isinstance(err, OSError) and err.errno in CANNOT_WRITE:
                err = _cannot_write("output_dir", out_dir, err)
            if lock is not None:
                lock.release()
            if created and out_dir.is_dir() and not any(out_dir.iterdir()):
                out_dir.rmdir()
            if not env.distributed:
                if isinstance(err, RunDirError):
                    raise err from None
                raise
            all_gather_objects(("error", f"{type(err).__name__}: {err}"), env)
            if isinstance(err, RunDirError):
                raise err from None
            raise
        if env.distributed:
            all_gather_objects(("ok", None if resume_point is None else str(resume_point.path)), env)
        return RunDir(out_dir, resume_point, lock, command, moved_to, invocation=command_line(app, drop=()),
                      created=created)
    status, value = all_gather_objects(None, env)[0]
    if status == "error":
        raise RunDirError(f"rank 0 refused the run: {value}")
    return RunDir(out_dir, None if value is None else ResumePoint(Path(value)), None, command)
