"""What the console scripts share: running a job with one-line errors and documented exit codes."""

from __future__ import annotations

import signal
import string
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from asa.api.configuration.checks import check_task_choice, entry_store
from asa.api.config import compose_config, config_folder, config_path, group_options, search_path
from asa.api.config import describe_compose_error as _compose_error  # the one line of a refused command line
from asa.api.machinery.run import OptionError, describe_error
from asa.api.machinery.rundir import RunDirError
from asa.cli.interrupted import EXIT_INTERRUPTED
from asa.cli.status import write_status
from asa.data import CaseError
from asa.data.store import StoreIndexError, StoreSettingsError
from asa.train import IncompatibleCheckpointError
from asa.train.preemption import JobSignals, StopSignals

__all__ = ["EXIT_FAILED", "EXIT_FINISHED", "EXIT_INTERRUPTED", "EXIT_REFUSED", "console_main", "entry", "help_text",
           "user_groups"]

# exit codes (docs/run-folders.md, "Exit codes"); a run stopped by signal N exits 128 + N (SIGTERM: 143, Ctrl-C's
# SIGINT: 130)
EXIT_FINISHED = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2


_REFUSALS = (RunDirError, IncompatibleCheckpointError, CaseError, StoreSettingsError, StoreIndexError, OptionError)


def _transform_cause(err: BaseException) -> BaseException:
    """The error a MONAI transform raised, out of MONAI's ``applying transform <object at 0x…>`` wrapper
    (one per nested `Compose`)."""
    while (isinstance(err, RuntimeError) and str(err).startswith("applying transform")
           and err.__cause__ is not None):
        err = err.__cause__
    return err


def _run(app: str, run: Callable[[DictConfig], Any], cfg: DictConfig) -> int:
    try:
        result = run(cfg)
    except Exception as raised:
        if cfg.get("debug", False):
            raise
        err = _transform_cause(raised)
        if isinstance(err, _REFUSALS):
            print(f"[{app}] refused: {err}", file=sys.stderr, flush=True)
            return EXIT_REFUSED
        print(f"[{app}] error: {describe_error(err)}\n  (rerun with debug=true for the full traceback)",
              file=sys.stderr, flush=True)
        return EXIT_FAILED
    signum = getattr(result, "signal", None)
    if getattr(result, "preempted", False) and signum:
        return 128 + int(signum)
    return EXIT_FINISHED


def entry(app: str, run: Callable[[DictConfig], Any], cfg: DictConfig) -> None:
    """Run an entry point and end the process with a documented exit code: 0 finished, 1 failed,
    2 refused before starting (a bad option or value, run-directory rules, lock, incompatible resume,
    bad cases, a store written under other settings or whose index is not one asa wrote), 128 + N
    stopped by signal N (saying what the job kept). Errors print one line (``debug=true``: the full
    traceback; an error raised inside a data transform is shown by its own message).

    Outside training a stop signal ends the job with 128 + N, but once training has finished it is
    only noted (`asa.train.preemption.JobSignals`). Under ``asa-torchrun`` the code is also recorded
    for the launcher (`asa.cli.launch`)."""
    code = EXIT_FAILED
    try:
        with JobSignals() as signals:
            code = _run(app, run, cfg)
            if code == EXIT_FINISHED:  # done: a stop signal from now until the process ends changes nothing
                signals.finished = True
        if code == EXIT_FINISHED and threading.current_thread() is threading.main_thread():
            for sig in StopSignals.SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        if signals.received is not None and code == EXIT_FINISHED:
            print(f"[{app}] received {signal.Signals(signals.received).name} after the run had finished: "
                  "nothing left to save, exiting 0", file=sys.stderr, flush=True)
    except SystemExit as stop:  # a stop signal before training, or outside it
        code = stop.code if isinstance(stop.code, int) else EXIT_FAILED
        if code > 128:
            kept = getattr(stop, "kept", None)  # what a job finished before the signal (set by the job)
            print(f"[{app}] stopped by {signal.Signals(code - 128).name} "
                  f"({f'kept: {kept}' if kept else 'nothing to save'}); exit {code}",
                  file=sys.stderr, flush=True)
    finally:
        write_status(code)
    sys.exit(code)


class _HeldStderr:
    """Stands in for ``sys.stderr`` while Hydra composes the config, holding what it writes, so that a
    command line that does not compose is reported as one line (`_compose_error`)."""

    def __init__(self, real) -> None:
        self.real, self.held = real, []

    def write(self, text: str) -> int:
        self.held.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def __getattr__(self, name: str):
        return getattr(self.real, name)


# groups a primary config lists only so that its presets compose, which its command line never sets: asa-preprocess's
# optim (asa-pretrain's data=demo picks an optimiser preset)
COMPOSE_ONLY = {"preprocess": ("optim",)}
_SYNTAX = """
== Overrides ==
group=option picks a preset; key=value sets a key{nested}.
A value with spaces is quoted inside the shell's quotes: "output_dir='runs/my run'".
{app} --cfg job [overrides] prints the config a command line composes; {app} [overrides] --help, this help with it.
"""


def user_groups(name: str) -> list[str]:
    """The config groups ``asa-<name>``'s command line sets: those its primary config's defaults list chooses (the
    groups its presets compose from, ``network``, ``pretrain_network``, ``sizes/*``, and those of other entry points
    are not), but `COMPOSE_ONLY`'s."""
    primary = OmegaConf.load(config_folder(name) / f"{name}.yaml")
    listed = [next(iter(entry)) for entry in primary.get("defaults", []) if isinstance(entry, Mapping)]
    return [g for g in listed if not g.startswith("override ") and g not in COMPOSE_ONLY.get(name, ())]


def help_text(app: str, name: str, overrides: Sequence[str] = ()) -> str:
    """What ``<app> [overrides] --help`` prints: the help template of ``configs/<name>/<name>.yaml``
    (``hydra.help.template``) with the groups a user may set and their options (`user_groups`, `group_options`) for
    ``$APP_CONFIG_GROUPS`` and the config the command line composes for ``$CONFIG``, then the override syntax."""
    primary = OmegaConf.load(config_folder(name) / f"{name}.yaml")
    groups = group_options(name, user_groups(name))
    listed = "".join(f"{group}: {', '.join(options)}\n" for group, options in sorted(groups.items()))
    try:
        cfg = compose_config(name, list(overrides))
    except HydraException as err:  # a command line that does not compose: one line, as when it runs
        raise OptionError(_compose_error(f"{err}\n{err.__cause__ or ''}")) from None
    text = string.Template(primary.hydra.help.template).substitute(APP_CONFIG_GROUPS=listed,
                                                                   CONFIG=OmegaConf.to_yaml(cfg))
    plain = OmegaConf.to_container(cfg, resolve=False)  # required values (???) left open
    nested = next((f"{key}.{leaf}" for key, section in plain.items() if isinstance(section, dict)
                   for leaf, value in section.items() if not isinstance(value, dict)), None)
    return text.rstrip("\n") + "\n" + _SYNTAX.format(app=app, nested=f" (nested keys with dots: {nested}=...)"
                                                                          if nested else "")


def console_main(app: str, name: str, run: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """The ``main`` of a Hydra console script: compose ``configs/<name>`` and `entry` the job. Hydra
    ends with 1 and a multi-line report when the command line cannot be composed (an unknown key, a
    wrong type, a missing preset, an unquoted path with spaces); that is a refused option, so it
    ends here with 2 and one line."""
    import hydra
    from hydra.core.hydra_config import HydraConfig


    held = _HeldStderr(sys.stderr)

    @hydra.main(config_path=config_path(name), config_name=name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        sys.stderr = held.real  # composed: from here on the job writes as usual
        held.real.write("".join(held.held))
        held.held.clear()
        overrides = list(HydraConfig.get().overrides.task)

        def checked(cfg: DictConfig) -> Any:
            try:  # a group chosen on the command line that the composed config would drop
                check_task_choice(cfg, overrides)
            except ValueError as err:
                raise OptionError(str(err)) from None
            return run(cfg)

        entry(app, checked, cfg)

    def main() -> None:
        # Hydra's store as this entry point composes with it, filled now: methods, tasks and networks registered after
        # this module's import count; the search path's folders, where asa is not installed, on the command line
        argv, sys.argv = sys.argv, [*sys.argv, *search_path(name)]
        sys.stderr = held
        try:
            with entry_store(name, config_folder(name)):
                _main()
        except KeyboardInterrupt:  # Ctrl-C before the job took the stop signals (while Hydra composed)
            sys.stderr = held.real
            print(f"[{app}] stopped by SIGINT before the job started: nothing to save; exit {EXIT_INTERRUPTED}",
                  file=sys.stderr, flush=True)
            sys.exit(EXIT_INTERRUPTED)
        except SystemExit as stop:
            if sys.stderr is held and stop.code == EXIT_FAILED:  # Hydra's own exit: it did not compose
                sys.stderr = held.real
                print(f"[{app}] refused: {_compose_error(''.join(held.held))}", file=sys.stderr, flush=True)
                sys.exit(EXIT_REFUSED)
            raise
        finally:
            sys.argv = argv
            if sys.stderr is held:
                sys.stderr = held.real
                held.real.write("".join(held.held))

    main.__doc__ = f"``{app}``: compose configs/{name}/ and run the job."
    return main
