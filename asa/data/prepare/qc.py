"""Quality control of a prepared folder: per case the prepared brain's mirror symmetry (correlation with
its left-right mirror about the template's mid-sagittal plane), the brain's volume (mL, native space) and
the registration's similarity (correlation of the prepared T1 with the template over their common
brain); outliers flagged against the cohort's own distribution (robust z, median and MAD), and one
page (``qc/index.html``) with a mid-axial and a mid-coronal slice of each case, the mid-sagittal plane
drawn."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from asa.io.atomic import atomic_write_text

__all__ = ["QC_MEASURES", "OUTLIER_Z", "MIN_COHORT", "SPREAD_FLOOR", "robust_z", "read_records", "qc_table", "write_qc"]

QC_MEASURES = ("symmetry", "brain_ml", "similarity")
OUTLIER_Z = 3.5
"""A case is flagged where a measure's robust z is beyond this (Iglewicz and Hoaglin's cut-off)."""
MIN_COHORT = 8
"""Fewer cases than this flag nothing: their median and MAD say too little about the cohort."""
SPREAD_FLOOR = 0.05
"""The robust z's scale is at least this fraction of the median: a tight cohort (four demo heads whose
symmetry spans 0.65-0.71) does not make a 7 % difference an outlier."""
_LOW_IS_BAD = {"symmetry", "similarity"}  # a high symmetry or similarity is never an outlier


def robust_z(values: list[float | None], *, floor: float = 0.0) -> list[float | None]:
    """(x - median) / max(1.4826 MAD, ``floor`` |median|) of each value over the finite ones (None where a
    value is missing, fewer than three are given or the scale is 0)."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if finite.size < 3:
        return [None] * len(values)
    median = float(np.median(finite))
    scale = max(1.4826 * float(np.median(np.abs(finite - median))), floor * abs(median))
    if scale <= 0:
        return [None] * len(values)
    return [None if v is None or not math.isfinite(v) else (v - median) / scale for v in values]


def read_records(out: Path) -> list[dict[str, Any]]:
    """The case records of a prepared folder, sorted by id."""
    records = []
    for path in sorted(Path(out).glob("sub-*/**/*_desc-prepare.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        record["record"] = str(path.relative_to(out))
        records.append(record)
    return sorted(records, key=lambda r: r["id"])


def qc_table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per case: its measures, their robust z (`robust_z` with `SPREAD_FLOOR`) and the measures
    flagged (beyond `OUTLIER_Z`, in a cohort of `MIN_COHORT` cases or more)."""
    rows = [{"id": r["id"], **{m: r["qc"].get(m) for m in QC_MEASURES}, "flags": []} for r in records]
    judge = len(rows) >= MIN_COHORT
    for measure in QC_MEASURES:
        for row, z in zip(rows, robust_z([row[measure] for row in rows], floor=SPREAD_FLOOR)):
            row[f"{measure}_z"] = z
            if judge and z is not None and (z < -OUTLIER_Z or (z > OUTLIER_Z and measure not in _LOW_IS_BAD)):
                row["flags"].append(measure)
    return rows


def _thumbnail(record: dict[str, Any], out: Path, png: Path) -> None:
    """Mid-axial and mid-coronal slices of the prepared T1, the brain mask's outline and the mid-sagittal
    plane (x = 0, the grid's centre) drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = nib.load(str(out / record["files"]["t1"]))
    data = np.asarray(image.get_fdata(dtype=np.float32))
    mask = np.asarray(nib.load(str(out / record["mask"])).dataobj) > 0
    x, y, z = (n // 2 for n in data.shape)
    top = float(np.percentile(data[mask], 99.5)) if mask.any() else float(data.max() or 1.0)
    fig, axes = plt.subplots(1, 2, figsize=(5.0, 2.6), dpi=80)
    for ax, plane, outline, title in ((axes[0], data[:, :, z], mask[:, :, z], "axial"),
                                      (axes[1], data[:, y, :], mask[:, y, :], "coronal")):
        ax.imshow(plane.T, origin="lower", cmap="gray", vmin=0, vmax=top, interpolation="nearest")
        if outline.any() and not outline.all():
            ax.contour(outline.T.astype(float), levels=[0.5], colors="#1f77b4", linewidths=0.6)
        ax.axvline((data.shape[0] - 1) / 2, color="#ff7f0e", linewidth=0.8)  # the template's mid-sagittal plane
        ax.set_title(f"{record['id']} {title}", fontsize=7)
        ax.set_axis_off()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    part = png.with_name(f".{png.name}.part.png")
    fig.savefig(part)
    plt.close(fig)
    part.replace(png)


def _tsv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _cell(value: float | None, z: float | None, digits: int) -> str:
    if value is None:
        return "<td>-</td>"
    note = "" if z is None else f" <small>(z {z:+.1f})</small>"
    bad = z is not None and abs(z) > OUTLIER_Z
    return f"<td{' class=bad' if bad else ''}>{value:.{digits}f}{note}</td>"


def write_qc(out: Path) -> Path | None:
    """Write ``qc/qc.tsv``, one PNG per case and ``qc/index.html`` for every case recorded in ``out``;
    returns the page (None when no case is prepared). A thumbnail newer than its record is kept."""
    out = Path(out)
    records = read_records(out)
    if not records:
        return None
    folder = out / "qc"
    rows = qc_table(records)
    header = ["id", *QC_MEASURES, *(f"{m}_z" for m in QC_MEASURES), "flags"]
    lines = ["\t".join(header)]
    for row in rows:
        lines.append("\t".join(_tsv(row[k]) for k in header))
    atomic_write_text(folder / "qc.tsv", "\n".join(lines) + "\n")
    body = []
    for record, row in zip(records, rows):
        png = folder / f"{record['id']}.png"
        if not png.is_file() or png.stat().st_mtime < (out / record["record"]).stat().st_mtime:
            _thumbnail(record, out, png)
        flags = ", ".join(row["flags"]) or "&nbsp;"
        body.append(f"<tr><td>{html.escape(record['id'])}</td>{_cell(row['symmetry'], row['symmetry_z'], 3)}"
                    f"{_cell(row['brain_ml'], row['brain_ml_z'], 0)}{_cell(row['similarity'], row['similarity_z'], 3)}"
                    f"<td class=bad>{flags}</td><td><img src='{html.escape(png.name)}' height=200></td></tr>")
    flagged = sum(bool(row["flags"]) for row in rows)
    page = f"""<!doctype html><meta charset=utf-8><title>asa-prepare QC: {html.escape(out.name)}</title>
<style>body{{font-family:sans-serif}} td{{padding:2px 8px;vertical-align:middle}} .bad{{color:#c00}}</style>
<h1>asa-prepare QC: {html.escape(str(out))}</h1>
<p>{len(rows)} case(s), {flagged} flagged (robust z beyond {OUTLIER_Z} against this cohort: low symmetry or
similarity, or an unusual brain volume; from {MIN_COHORT} cases on, differences under {SPREAD_FLOOR:.0%} of the
median never). Symmetry: correlation of the prepared T1 with its left-right mirror
about the template's mid-sagittal plane (orange); similarity: correlation with the template over the
common brain; brain volume in native space (mL). Blue: the brain mask.</p>
<table><tr><th>case</th><th>symmetry</th><th>brain (mL)</th><th>similarity</th><th>flags</th><th>mid-axial,
mid-coronal</th></tr>
{chr(10).join(body)}
</table>
"""
    atomic_write_text(folder / "index.html", page)
    return folder / "index.html"
