"""What a pretraining cohort adds to the weight files, at 10⁴ and 10⁵ cases (OpenMind: 114k volumes).

Each case is one image with a content digest and a fingerprint (`asa.data.fingerprint`: 4096 int8 values as base64;
fingerprints of random brain-sized objects, 200 distinct ones cycled, so gzip finds no repeats in its 32 KB window),
as ``asa-export --cohort digests`` writes them (opaque keys). For each size it writes, for a tiny ResEnc encoder:

- *before*: the record in the file (`asa.data.cohort.export_cohort`, as asa did up to this change): the safetensors
  metadata and nnssl's ``checkpoint_final.pth`` (a torch file);
- *after*: the summary in the file (`asa.data.cohort.cohort_summary`) and the list beside it (``cohort.json.gz``);

and reports what the cohort adds to each file (its size less the same file without a cohort). What a file of
ResEnc-L weighs is that addition plus ResEnc-L's file without a cohort, written once (``model.safetensors``: the
encoder; ``checkpoint_final.pth``: the whole network, as nnssl's own file holds it).

    python -m benchmarks.cohort_size                 # 10^4 and 10^5 cases
    python -m benchmarks.cohort_size --cases 10000
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from asa.data.cohort import cohort_summary, export_cohort
from asa.data.cohort_list import COHORT_FORMAT, write_cohort_list
from asa.data.digests import DIGEST
from asa.data.fingerprint import FINGERPRINT, encode_fingerprint, image_fingerprint
from asa.io import save_checkpoint, save_export_safetensors
from asa.models import network_spec
from asa.formats.nnssl import nnssl_checkpoint
from asa.models.cnn.resenc import resenc_unet
from asa.models.portable import encoder_export


def fingerprints(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct fingerprints ([4096] int8) of smooth random brain-sized objects."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = np.zeros((40, 40, 40), dtype=np.float32)
        image[8:32, 6:34, 9:30] = ndimage.gaussian_filter(rng.uniform(0.5, 1.0, (24, 28, 21)), 1.5) + 0.5
        out.append(image_fingerprint(image, (6.0, 6.0, 6.0)))
    return out


def record(cases: int, prints: list[np.ndarray]) -> dict:
    """A synthetic cohort record of ``cases`` one-image cases, as ``asa-export --cohort digests`` carries it: each
    case's fingerprint one of ``prints`` rolled by its own offset, so that every one is distinct (as people's are;
    a torch file's pickle would store a repeated string once)."""
    members = {f"sub-{n:06d}": {"part": "train", "subject": f"{n:06d}",
                                "images": {"t1": "sha256:" + secrets.token_hex(32)},
                                "fingerprints": {"t1": encode_fingerprint(np.roll(prints[n % len(prints)],
                                                                                  1 + n // len(prints)))}}
               for n in range(cases)}
    return export_cohort({"format": COHORT_FORMAT, "digest": DIGEST, "fingerprint": FINGERPRINT,
                          "seen_parts": ["train", "val"], "cases": members}, ids=False)


def files(folder: Path, net: torch.nn.Module, cohort: dict | None) -> dict[str, int | str]:
    """Bytes of ``model.safetensors`` and ``checkpoint_final.pth`` of ``net``'s encoder carrying ``cohort`` (as
    given: a record or a summary), or the error the write ended in."""
    folder.mkdir(parents=True, exist_ok=True)
    export = encoder_export("last.pt", {"model": net.state_dict(), "network": network_spec(net), "step": 1})
    sizes: dict[str, int | str] = {}
    if cohort is not None:
        export["cohort"] = cohort
    try:
        sizes["model.safetensors"] = save_export_safetensors(folder / "model.safetensors", export).stat().st_size
    except Exception as err:  # noqa: BLE001 - the failure is the measurement
        sizes["model.safetensors"] = f"{type(err).__name__}: {err}"
    nnssl = nnssl_checkpoint(export, spacing_mm=[1.0] * 3, source="last.pt", dataset="asa", trainer="asa:mae",
                             extra={} if cohort is None else {"cohort": cohort})
    sizes["checkpoint_final.pth"] = save_checkpoint(folder / "checkpoint_final.pth", nnssl).stat().st_size
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[10**4, 10**5])
    parser.add_argument("--no-large", action="store_true", help="skip writing ResEnc-L's files")
    args = parser.parse_args(argv)
    prints = fingerprints(200)
    torch.manual_seed(0)
    tiny = resenc_unet(img_size=32, in_channels=1, out_channels=1, size="tiny")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = files(Path(tmp) / "none", tiny, None)
        if not args.no_large:
            large = resenc_unet(img_size=160, in_channels=1, out_channels=1, size="L")
            results["resenc_l"] = files(Path(tmp) / "large", large, None)
            del large
        for n in args.cases:
            cohort = record(n, prints)
            before = files(Path(tmp) / f"before-{n}", tiny, cohort)
            start = time.perf_counter()
            listed = write_cohort_list(Path(tmp) / f"after-{n}", cohort)
            written = time.perf_counter() - start
            after = files(Path(tmp) / f"after-{n}", tiny, cohort_summary(cohort))
            results[n] = {
                "record_json_bytes": len(json.dumps(cohort)),
                "before_added": {k: (v - base[k] if isinstance(v, int) else v) for k, v in before.items()},
                "after_added": {k: v - base[k] for k, v in after.items()},
                "list_bytes": listed.stat().st_size, "list_write_s": round(written, 2)}
            print(n, json.dumps(results[n]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
