"""One axial slice per realism option of the template subjects (`asa-demo-data --anatomy`), as a PNG.

Top row: lesions at the fixed placement and with no location prior (``--placement free``; heterotopia
outlined in red, the grey-matter enlargement in yellow), a skull-stripped brain and the same subject
as a whole head (``--skull``). Bottom row: the whole head's four contrasts, what ``--contrasts t1 t1ce
t2 flair`` writes per subject. Usage: ``python scripts/demo_data_figure.py docs/demo_data_options.png``
(needs ``pip install "asa[anatomy]"``; about 20 s)."""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from asa.data import BIDS_CONTRASTS, make_anatomy_subject  # noqa: E402


def _lesion_slice(labels: np.ndarray) -> int:
    """The axial slice holding the most lesion voxels."""
    return int(np.argmax((labels >= 4).sum((0, 1))))


def _show(ax: plt.Axes, image: np.ndarray, title: str, labels: np.ndarray | None = None) -> None:
    ax.imshow(image.T, origin="lower", cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    if labels is not None:
        for value, colour in ((4, "red"), (5, "yellow")):
            if (labels == value).any():
                ax.contour((labels == value).T.astype(float), levels=[0.5], colors=colour, linewidths=0.8)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--size", type=int, default=64, help="grid edge in voxels (default: 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    fig, axes = plt.subplots(2, 4, figsize=(8.0, 4.6))
    for ax, placement in zip(axes[0, :2], ("fixed", "free")):
        subject = make_anatomy_subject(args.size, seed=args.seed, index=1, lesions=True, placement=placement)
        z = _lesion_slice(subject.labels)
        _show(ax, subject.images["t1"][:, :, z], f"--lesions --placement {placement}", subject.labels[:, :, z])
    stripped = make_anatomy_subject(args.size, seed=args.seed, index=0)
    head = make_anatomy_subject(args.size, seed=args.seed, index=0, skull=True)
    z_brain = int(np.argwhere(stripped.brain_mask)[:, 2].mean())
    z_head = int(np.argwhere(head.brain_mask)[:, 2].mean())
    _show(axes[0, 2], stripped.images["t1"][:, :, z_brain], "skull-stripped (default)")
    _show(axes[0, 3], head.images["t1"][:, :, z_head], "--skull")
    for ax, (contrast, suffix) in zip(axes[1], BIDS_CONTRASTS.items()):
        image = head.images[contrast][:, :, z_head]
        _show(ax, image / max(float(np.percentile(image, 99.5)), 1e-6), f"--skull, _{suffix}")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
