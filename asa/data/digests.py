"""Each image's content digest and fingerprint, read once by worker processes. The digest is the sha256 of its voxels
in asa's frame (RAS+, as nibabel's ``as_closest_canonical`` gives them) cast to float32, with the grid's shape: a
renamed, re-compressed, re-typed (int16 -> float32) or re-oriented copy has the same digest, a resampled, cropped or
re-normalised one does not; its fingerprint (`asa.data.fingerprint`) finds those."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from asa.data.case import Case
from asa.data.fingerprint import encode_fingerprint, image_fingerprint
from asa.data.store_writer import worker_pool

__all__ = ["DIGEST", "image_digests", "image_signatures", "ras_voxels", "volume_digest", "volume_signature"]

DIGEST = "sha256 of the RAS+ voxels as float32 with the grid shape (asa.data.cohort.volume_digest)"  # word for word as files record it


def ras_voxels(path: str | os.PathLike, frame: int | None) -> tuple[np.ndarray, tuple[float, ...]]:
    """The voxels of the image at ``path`` in asa's frame (RAS+, nibabel's ``as_closest_canonical``) as float32
    (``frame``: a volume of a 4D file), and its voxel sizes: what the digest and the fingerprint read."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if frame is not None and data.ndim == 4:
        data = data[..., int(frame)]
    return data, tuple(float(z) for z in img.header.get_zooms()[:3])


def _sha(data: np.ndarray) -> str:
    h = hashlib.sha256(("x".join(map(str, data.shape)) + "|").encode())
    h.update(np.ascontiguousarray(data).tobytes())
    return "sha256:" + h.hexdigest()


def volume_digest(path: str | os.PathLike, frame: int | None = None) -> str:
    """``sha256:<hex>`` of the image at ``path`` (``frame``: a volume of a 4D file): its voxels reoriented to RAS+,
    cast to float32 (C order), prefixed by the grid's shape."""
    return _sha(ras_voxels(path, frame)[0])


def volume_signature(path: str | os.PathLike, frame: int | None = None) -> tuple[str, str]:
    """(digest, fingerprint as text) of the image at ``path``, read once: :func:`volume_digest` and
    `asa.data.fingerprint.image_fingerprint` (``encode_fingerprint``'s text). An image without a brain to
    fingerprint (a label map, a constant volume) gets the fingerprint ``""``, which matches nothing."""
    data, zooms = ras_voxels(path, frame)
    try:
        fingerprint = encode_fingerprint(image_fingerprint(data if data.ndim == 3 else data[..., 0], zooms))
    except ValueError:
        fingerprint = ""
    return _sha(data), fingerprint


def _digest(job: tuple[str, str, str, int | None]) -> str:
    return volume_digest(job[2], job[3])


def _signature(job: tuple[str, str, str, int | None]) -> tuple[str, str]:
    return volume_signature(job[2], job[3])


def _per_image(cases: Sequence[Case], read, workers: int) -> dict[str, dict[str, Any]]:
    """Case id -> {channel: read(job)} over every image of ``cases``, by ``workers`` processes (1: in this one;
    threads gain nothing: nibabel's gzip reading holds the GIL)."""
    jobs = [(c.id, ch, str(path), c.frame(ch)) for c in cases for ch, path in c.images.items()]
    if int(workers) > 1 and len(jobs) > 1:
        with worker_pool(min(int(workers), len(jobs))) as pool:
            values = list(pool.map(read, jobs, chunksize=max(1, len(jobs) // (8 * int(workers)))))
    else:
        values = [read(job) for job in jobs]
    out: dict[str, dict[str, Any]] = {}
    for (case_id, channel, _, _), value in zip(jobs, values):
        out.setdefault(case_id, {})[channel] = value
    return out


def image_digests(cases: Sequence[Case], *, workers: int = 4) -> dict[str, dict[str, str]]:
    """Case id -> {channel: digest} of every image of ``cases``, read by ``workers`` processes."""
    return _per_image(cases, _digest, workers)


def image_signatures(cases: Sequence[Case], *, workers: int = 4) -> tuple[dict[str, dict[str, str]],
                                                                           dict[str, dict[str, str]]]:
    """(case id -> {channel: digest}, case id -> {channel: fingerprint text}) of every image of ``cases``, each
    image read once (:func:`volume_signature`) by ``workers`` processes."""
    both = _per_image(cases, _signature, workers)
    return ({c: {ch: v[0] for ch, v in chans.items()} for c, chans in both.items()},
            {c: {ch: v[1] for ch, v in chans.items()} for c, chans in both.items()})
