"""A console script's main on several command lines in one child process: one interpreter start-up (torch,
MONAI, Hydra) for all of them instead of one each, with each run's exit code and stderr kept apart."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

_EACH = """
import json, runpy, sys
from hydra.core.global_hydra import GlobalHydra
module, runs = json.loads(sys.argv[1])
for argv in runs:
    sys.argv = ["asa-" + module.rsplit(".", 1)[-1].replace("_", "-"), *argv]
    print("=== run", file=sys.stderr, flush=True)
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as err:  # as the interpreter ends with it: None 0, a message 1
        code = 0 if err.code is None else err.code if isinstance(err.code, int) else 1
    GlobalHydra.instance().clear()
    print("=== exit", code, file=sys.stderr, flush=True)
"""


def run_each(module: str, runs: Sequence[Sequence[str]], env: dict, timeout: float = 300,
             cwd: str | None = None) -> list[tuple[int, str]]:
    """(exit code, stderr) of ``python -m <module> <argv>`` for each argv of ``runs``, in order, from one
    child process working in ``cwd`` (the runs share it: a later run sees the files an earlier one wrote)."""
    proc = subprocess.run([sys.executable, "-c", _EACH, json.dumps([module, [list(r) for r in runs]])],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outputs = proc.stderr.split("=== run\n")[1:]
    assert len(outputs) == len(runs), proc.stderr[-2000:]
    found = []
    for output in outputs:
        stderr, _, code = output.rpartition("=== exit ")
        found.append((int(code), stderr))
    return found
