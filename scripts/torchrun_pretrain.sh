#!/usr/bin/env bash
# Multi-GPU / multi-node ASA pretraining with torchrun (DDP, NCCL). Every rank shares OUTPUT_DIR;
# only rank 0 writes checkpoints and TensorBoard logs.
#
# One machine, 4 GPUs (global batch 4 x 24 = 96, the paper's):
#   DATA_ROOT=/data/ADNI_BIDS OUTPUT_DIR=runs/adni_asa NPROC=4 scripts/torchrun_pretrain.sh
# Two machines (run the same command on both; MASTER_ADDR = a host both can reach):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node01 DATA_ROOT=... scripts/torchrun_pretrain.sh   # on node01
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node01 DATA_ROOT=... scripts/torchrun_pretrain.sh   # on node02
# Extra arguments are Hydra overrides, e.g.  experiment=mae  trainer.epochs=200  resume=auto
set -euo pipefail

: "${DATA_ROOT:?set DATA_ROOT to a BIDS (or CAPS: add data.layout=caps) folder}"
DATA="${DATA:-adni}"                      # adni | oasis
OUTPUT_DIR="${OUTPUT_DIR:-runs/pretrain_${DATA}}"
NPROC="${NPROC:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
NPROC="${NPROC:-1}"; [ "$NPROC" -ge 1 ] || NPROC=1
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"   # per process; data workers add their own

if [ "$NNODES" -eq 1 ]; then
    RDZV=(--standalone)
else
    RDZV=(--nnodes="$NNODES" --node_rank="$NODE_RANK" --rdzv_backend=c10d
          --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv_id="${RDZV_ID:-asa_pretrain}")
fi

# asa-torchrun is torchrun (same arguments, same rendezvous) ending with the workers' exit code:
# 0 done, 1 failed, 2 refused, 143 stopped by SIGTERM after saving last.pt (requeue with resume=auto)
exec python -m asa.cli.launch "${RDZV[@]}" --nproc_per_node="$NPROC" -m asa.cli.pretrain \
    data="$DATA" data.root="$DATA_ROOT" model=base trainer=paper \
    output_dir="$OUTPUT_DIR" resume=auto "$@"
