"""What the pretraining-cohort check costs (`asa.data.cohort`): reading each image's content digest, and matching
a fine-tuning split against a cohort of 10⁴ cases.

The digest reads every voxel of every image, so its cost is per file: measured on ``--files`` T1-sized volumes
(182 × 218 × 182 int16, gzip, as FreeSurfer/FSL's 1 mm MNI grid) with 1 and ``--workers`` processes, then
given for 10⁴ files at that rate. The matching is measured on a synthetic cohort record of ``--cohort`` cases
(its digests random, as distinct volumes' are) against a split of ``--split`` cases, some of them copies of
cohort cases under new ids, which it must find by content. Also the size of that cohort record as
``cohort.json``.

    python -m benchmarks.cohort                       # 16 files, a 10⁴-case cohort
    python -m benchmarks.cohort --files 64 --workers 8
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from asa.data.case import Case
from asa.data.cohort import SEEN_PARTS
from asa.data.cohort_list import COHORT_FORMAT
from asa.data.digests import DIGEST, image_digests
from asa.data.overlap import cohort_overlap

SHAPE = (182, 218, 182)


def write_volumes(folder: Path, n: int) -> list[Case]:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        path = folder / f"sub-{i:05d}_T1w.nii.gz"
        nib.save(nib.Nifti1Image(rng.integers(0, 1000, SHAPE, dtype=np.int16), np.eye(4)), str(path))
        cases.append(Case(id=f"sub-{i:05d}", images={"t1": path}, meta={"subject": f"sub-{i:05d}"}))
    return cases


def digest_rate(cases: list[Case], workers: int) -> float:
    start = time.perf_counter()
    image_digests(cases, workers=workers)
    return (time.perf_counter() - start) / len(cases)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=16, help="T1-sized volumes the digest is timed on (default 16)")
    p.add_argument("--workers", type=int, default=2, help="reader processes of the parallel timing (default 2)")
    p.add_argument("--cohort", type=int, default=10_000, help="cases of the synthetic cohort record (default 10⁴)")
    p.add_argument("--split", type=int, default=200, help="cases of the split compared with it (default 200)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cases = write_volumes(Path(tmp), args.files)
        one = digest_rate(cases, 1)
        many = digest_rate(cases, args.workers)
        digests = image_digests(cases[:1], workers=1)
    mb = float(np.prod(SHAPE)) * 2 / 2 ** 20
    # a cohort of distinct volumes, and a split whose first 10 cases are renamed copies of cohort cases
    cohort = {"format": COHORT_FORMAT, "digest": DIGEST, "seen_parts": list(SEEN_PARTS),
              "cases": {f"c{i:05d}": {"part": "train", "subject": f"c{i:05d}", "images": {"t1": secrets.token_hex(32)}}
                        for i in range(args.cohort)}}
    split = [Case(id=f"test-{i:04d}", images={"t1": Path(f"test-{i:04d}.nii.gz")}, meta={"subject": f"test-{i:04d}"})
             for i in range(args.split)]
    split_digests = {c.id: {"t1": secrets.token_hex(32)} for c in split}
    for i in range(10):
        split_digests[f"test-{i:04d}"] = dict(cohort["cases"][f"c{i * 7:05d}"]["images"])
    start = time.perf_counter()
    found = cohort_overlap(cohort, {"test": split}, digests=split_digests)
    match_s = time.perf_counter() - start
    found_n = len(found["test"]["by_content"])
    size_mb = len(json.dumps(cohort)) / 2 ** 20
    result = {"volume_mib": round(mb, 1), "digest_s_per_file_1_worker": round(one, 3),
              f"digest_s_per_file_{args.workers}_workers": round(many, 3),
              "digest_h_for_10k_files_1_worker": round(one * 1e4 / 3600, 2),
              f"digest_h_for_10k_files_{args.workers}_workers": round(many * 1e4 / 3600, 2),
              "match_s": round(match_s, 3), "cohort_cases": args.cohort, "split_cases": args.split,
              "renamed_copies_found": found_n, "cohort_json_mib": round(size_mb, 2),
              "digest_example": next(iter(digests.values()))["t1"][:16]}
    for key, value in result.items():
        print(f"{key:34s} {value}")
    if found_n != 10:
        raise SystemExit(f"the matching found {found_n} of the 10 renamed copies")
    return result


if __name__ == "__main__":
    main()
