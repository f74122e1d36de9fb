"""Template subjects (anatomy=True): refusals that name the option, and the error without nilearn.
Needs no nilearn: every refusal comes before the template is read."""
from __future__ import annotations

import sys

import pytest

from asa.cli import demo_data
from asa.data import write_demo_dataset
from asa.data.synthetic import anatomy


@pytest.mark.parametrize("kwargs, words", [
    ({"layout": "brats", "anatomy": True}, ["anatomy=True (--anatomy)", "'brats'", "use 'msd'"]),
    ({"layout": "wmh", "anatomy": True}, ["anatomy=True (--anatomy)", "'wmh'"]),
    ({"layout": "msd", "lesions": True}, ["lesions=True (--lesions)", "anatomy=True, --anatomy"]),
    ({"layout": "ibsr", "anatomy": True, "lesions": True}, ["lesions=True (--lesions)", "'ibsr'", "1 CSF, 2 GM, 3 WM"]),
    ({"layout": "bids", "anatomy": True, "targets": True}, ["targets=True (--targets)", "anatomy=True"]),
])
def test_refusals_name_the_option(tmp_path, kwargs, words):
    layout = kwargs.pop("layout")
    with pytest.raises(ValueError) as err:
        write_demo_dataset(layout, tmp_path / "out", cases=1, size=16, **kwargs)
    for word in words:
        assert word in str(err.value)
    assert not (tmp_path / "out").exists()  # refused before writing anything


def test_cli_refusal_exits_2_naming_the_flag(tmp_path, capsys):
    assert demo_data.main(["--layout", "brats", "--anatomy", "--out", str(tmp_path / "o")]) == 2
    assert "--anatomy" in capsys.readouterr().err


def test_without_nilearn_the_error_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nilearn", None)  # import nilearn -> ImportError
    anatomy._load_template.cache_clear()
    anatomy._template_on_grid.cache_clear()
    try:
        with pytest.raises(ImportError, match=r'pip install "asa\[anatomy\]"'):
            anatomy.make_anatomy_subject(16)
        assert demo_data.main(["--layout", "bids", "--anatomy", "--size", "16", "--out", str(tmp_path / "o")]) == 2
        assert 'pip install "asa[anatomy]"' in capsys.readouterr().err
    finally:
        anatomy._load_template.cache_clear()
        anatomy._template_on_grid.cache_clear()
