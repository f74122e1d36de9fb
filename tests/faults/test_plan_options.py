"""asa-plan refuses every out-of-range number with exit 2, naming the option (no plan from a negative
size, an infinite rate or NaN)."""

from __future__ import annotations

import math

import pytest

from asa.planning import DeviceProfile, plan_run
from asa.cli.common import EXIT_REFUSED
from asa.cli.plan import main

BASE = ["--volumes", "100", "--epochs", "2", "--batch", "2", "--samples-per-s", "10", "--crops-per-worker", "5"]


def _with(option: str, *values: str) -> list[str]:
    argv = list(BASE)
    if option in argv:
        i = argv.index(option)
        del argv[i:i + 2]
    return [*argv, option, *values]


def test_the_base_command_plans(capsys):
    assert main(BASE) == 0 and "wall time" in capsys.readouterr().out


@pytest.mark.parametrize("option, values", [
    ("--case-mib", ["-2"]), ("--case-mib", ["0"]), ("--ram-gib", ["-1"]), ("--ram-gib", ["nan"]),
    ("--samples-per-s", ["inf"]), ("--samples-per-s", ["nan"]), ("--samples-per-s", ["-3"]),
    ("--crops-per-worker", ["0"]), ("--cold-crops-per-worker", ["-1"]), ("--flops-per-sample", ["inf"]),
    ("--peak-tflops", ["0"]), ("--utilization", ["1.5"]), ("--utilization", ["0"]), ("--volumes", ["0"]),
    ("--epochs", ["-1"]), ("--batch", ["0"]), ("--gpus", ["0"]), ("--gpus-per-node", ["0"]),
    ("--workers-per-gpu", ["-4"]), ("--channels", ["0"]), ("--box", ["144", "-1", "144"]), ("--batch", ["2.5"]),
])
def test_an_out_of_range_number_is_refused_naming_the_option(capsys, option, values):
    with pytest.raises(SystemExit) as stop:
        main(_with(option, *values))
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_REFUSED
    assert f"asa-plan: error: argument {option}: " in err and "is not " in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("field, name", [("samples_per_s", "samples/s per GPU"), ("crops_per_worker", "crops/s per worker"),
                                         ("cold_crops_per_worker", "cold crops/s per worker")])
@pytest.mark.parametrize("value", [math.inf, math.nan, -1.0])
def test_a_profile_read_from_a_file_is_checked_too(field, name, value):
    """Rates from --from-json / --benchmarks-md reach `plan_run` without argparse: it names the bad one."""
    rates = {"samples_per_s": 10.0, "crops_per_worker": 5.0, "cold_crops_per_worker": 2.0, field: value}
    with pytest.raises(ValueError, match=rf"^{name} {value}: expected finite numbers > 0"):
        plan_run(DeviceProfile(**rates), volumes=100, epochs=1, batch=2, gpus=1, case_bytes=1.0, ram_bytes=1.0)
