"""The walk a reader takes through asa's own code from a job's entry to its training loop.

Runs ``asa.api.finetune`` (or ``pretrain``) on a tiny demo configuration with a profiler hook and records
every call made by asa's job layer (``asa.api``, ``asa.cli``) to an asa function, up to the moment the
engine's ``fit`` is entered (what ``fit`` does is the engine's, not the job's). It prints one JSON object:

- ``stays``: the distinct asa functions the job layer calls on the way (each one a place a reader visits;
  the methods dataclasses generate are not counted);
- ``rooms``: the distinct modules those functions live in (files a reader opens);
- ``climbs``: calls that enter a module already on the call stack below another module (``a -> b -> a``):
  the walk leaves a file and comes back to it, the mark of an index that delegates back into a home;
- ``path``: the stays in call order, ``module:function``.

    python scripts/walk.py                                  # asa-finetune, segmentation on demo IBSR phantoms
    python scripts/walk.py data=targets task=case task.target=diagnosis   # the case task
    python scripts/walk.py --job pretrain experiment=asa
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

JOB_LAYER = ("asa.api", "asa.cli")
TINY = {"finetune": ["data=ibsr", "model=tiny", "data.crop=32", "data.demo.size=32", "data.demo.cases=6",
                     "trainer.max_steps=1", "trainer.progress=false", "trainer.panel_every=0"],
        "pretrain": ["model=tiny", "data.crop=32", "data.demo.size=32", "data.demo.cases=6", "trainer.max_steps=1",
                     "trainer.progress=false", "trainer.panel_every=0", "probe.every=0"]}


class Stop(Exception):
    """Raised on entering the engine's fit: the walk ends there."""


def walk(job: str, overrides: list[str]) -> dict:
    from asa.api import compose_config, finetune, pretrain

    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config(job, [*TINY[job], *overrides, f"output_dir={Path(out) / 'run'}"])
        stack: list[str] = []  # module of each asa frame on the stack (None for others)
        path: list[str] = []
        stays: dict[str, None] = {}
        climbs: list[str] = []

        def hook(frame, event, arg):
            module = frame.f_globals.get("__name__", "")
            if event == "call":
                mine = module.startswith("asa.")
                caller = next((m for m in reversed(stack) if m), None)
                if mine and frame.f_code.co_name == "fit" and module == "asa.train.engine":
                    raise Stop
                if mine and caller is not None and caller.startswith(JOB_LAYER) and module != caller \
                        and not frame.f_code.co_name.startswith("<") and "__create_fn__" not in frame.f_code.co_qualname:
                    name = f"{module}:{frame.f_code.co_qualname}"
                    path.append(name)
                    stays.setdefault(name)
                    below = [m for m in stack if m]
                    if module in below[:-1] and below[-1] != module:
                        climbs.append(f"{caller} -> {name}")
                stack.append(module if mine else "")
            elif event == "return" and stack:
                stack.pop()

        sys.setprofile(hook)
        try:
            (finetune if job == "finetune" else pretrain)(cfg)
        except Stop:
            pass
        finally:
            sys.setprofile(None)
    rooms = sorted({s.split(":")[0] for s in stays})
    return {"job": job, "overrides": overrides, "stays": len(stays), "rooms": len(rooms), "climbs": len(climbs),
            "room_names": rooms, "climb_calls": climbs, "path": path}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job", choices=sorted(TINY), default="finetune")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the job's config")
    args = p.parse_args(argv)
    print(json.dumps(walk(args.job, args.overrides), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
