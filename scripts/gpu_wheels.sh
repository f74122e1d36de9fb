#!/usr/bin/env bash
# Fetch, here, the packages asa needs that a GPU machine's image may lack (MONAI, nibabel, Hydra,
# OmegaConf and its ANTLR runtime, safetensors, importlib-resources before Python 3.12, nnU-Net's
# dynamic-network-architectures for model=resenc and the timm it pins (a GPU image's newer timm does not satisfy it), nilearn for the studies' template anatomy; torch,
# NumPy, SciPy, TensorBoard, tqdm, einops and pytest are usually there), at the versions installed
# here, for a GPU machine without a package index (about 17 MB, nilearn's templates most of it):
#
#   scripts/gpu_wheels.sh .wheels                          # here (pure Python, and safetensors' abi3 Linux wheel)
#   ASA_WHEELS=.wheels scripts/gpu_check.sh OUT_DIR        # there, with .wheels copied along
set -euo pipefail
DIR="${1:?usage: scripts/gpu_wheels.sh DIR}"
PY="${PYTHON:-python3}"
pkgs=()
for name in monai nibabel hydra-core omegaconf antlr4-python3-runtime safetensors importlib-resources \
        dynamic-network-architectures timm nilearn; do
    version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
    pkgs+=("$name${version:+==$version}")
done
"$PY" -m pip download -q --no-deps -d "$DIR" "${pkgs[@]}"
echo "gpu_wheels: ${pkgs[*]} in $DIR ($(du -sh "$DIR" | cut -f1))"
