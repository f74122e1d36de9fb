"""Options with a fixed set of values: declared once on their settings field, checked by dotted key.

`one_of` declares the values a dataclass field takes (from the constant its consumer checks
against); `check_choices` walks a config against its dataclass and refuses any other value naming
the dotted key where the field sits (``model.pos_mode='mirrror': expected one of mirror, paper,
none (did you mean mirror?)``), whatever group holds it. The networks' settings (`asa.models.NetworkSettings`
subclasses), the trainer settings (`TrainerSettings`), the methods' settings (`MethodSettings`
subclasses) and the job schemas (`asa.api.configuration.schema`) declare their fields this way; it sits below all
of them (it imports nothing of asa, and omegaconf only when it checks: the networks that declare
choices load without the config machinery).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["check_choices", "in_range", "one_of"]

_CHOICES, _NUMBER = "asa_choices", "asa_number"


def one_of(default: Any, choices: Sequence[str], *, number: tuple[float, float] | None = None) -> Any:
    """A dataclass field whose value must be one of ``choices`` (``null`` too when ``default`` is None;
    with ``number=(lo, hi)`` also a number in that closed range); checked by `check_choices`."""
    return dataclasses.field(default=default, metadata={_CHOICES: tuple(choices), _NUMBER: number})


def in_range(default: Any, lo: float, hi: float = float("inf")) -> Any:
    """A numeric dataclass field whose value must lie in [``lo``, ``hi``] (``null`` too when ``default``
    is None); checked by `check_choices`: a network setting is range-checked where it is declared."""
    return one_of(default, (), number=(lo, hi))


def _allowed(value: Any, f: dataclasses.Field) -> bool:
    if value is None:
        return f.default is None
    if value in f.metadata[_CHOICES]:
        return True
    span = f.metadata[_NUMBER]
    if span is None or isinstance(value, bool):
        return False
    try:
        return span[0] <= float(value) <= span[1]
    except (TypeError, ValueError):
        return False


def _expected(f: dataclasses.Field, value: Any) -> str:
    choices, span = f.metadata[_CHOICES], f.metadata[_NUMBER]
    if not choices:
        kind = "an integer" if all(isinstance(x, int) or x == float("inf") for x in span) else "a number"
        text = f"expected {kind} >= {span[0]}" if span[1] == float("inf") else f"expected {kind} in [{span[0]}, {span[1]}]"
        return text + (" or null" if f.default is None else "")
    text = f"expected one of {', '.join(choices)}"
    if span is not None:
        text += " or a number in [{}, {}]".format(*span)
    if f.default is None:
        text += " or null"
    close = difflib.get_close_matches(str(value), choices, n=1)
    return text + (f" (did you mean {close[0]}?)" if close else "")


def check_choices(cfg: DictConfig, schema: Any, prefix: str = "") -> None:
    """Refuse (``ValueError`` naming the dotted key, the value and the allowed values) any value of
    ``cfg`` outside the `one_of` choices its ``schema`` (a dataclass or an instance of one) declares;
    nested groups are checked under their own key (an instance's group: the dataclass it holds)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf  # here: declaring choices needs no config machinery

    for f in dataclasses.fields(schema):
        if f.name not in cfg:
            continue
        key = f"{prefix}{f.name}"
        if _CHOICES in f.metadata:
            if OmegaConf.is_missing(cfg, f.name):
                continue  # a required value left open is reported where it is read
            value = OmegaConf.select(cfg, f.name)
            if isinstance(value, (DictConfig, ListConfig)) or not _allowed(value, f):
                raise ValueError(f"{key}={value!r}: {_expected(f, value)}")
            continue
        nested = getattr(schema, f.name) if not isinstance(schema, type) else f.default_factory
        if dataclasses.is_dataclass(nested) and isinstance(cfg[f.name], DictConfig):
            check_choices(cfg[f.name], nested, f"{key}.")
