#!/usr/bin/env bash
# SLURM: one torchrun per node (srun), torchrun starts one process per GPU; c10d rendezvous on the
# first node. Requeue-safe: resume=auto continues from OUTPUT_DIR/checkpoints/last.pt if it exists.
#
#   DATA_ROOT=/data/ADNI_BIDS OUTPUT_DIR=/scratch/$USER/runs/adni_asa sbatch scripts/slurm_pretrain.sh [overrides]
#
#SBATCH --job-name=asa-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

: "${DATA_ROOT:?set DATA_ROOT to a BIDS (or CAPS: add data.layout=caps) folder}"
DATA="${DATA:-adni}"
OUTPUT_DIR="${OUTPUT_DIR:-runs/pretrain_${DATA}}"
GPUS_PER_NODE="${SLURM_GPUS_ON_NODE:-4}"
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
MASTER_PORT="${MASTER_PORT:-29500}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
export ASA_DIST_TIMEOUT_S="${ASA_DIST_TIMEOUT_S:-1800}"   # a dead peer ends the job instead of hanging

# asa-torchrun (python -m asa.cli.launch) is torchrun ending with the workers' exit code, so the job ends
# with 143 when preempted after saving last.pt (requeue), 2 when refused, 0 when done
srun --kill-on-bad-exit=1 python -m asa.cli.launch \
    --nnodes="$SLURM_JOB_NUM_NODES" --nproc_per_node="$GPUS_PER_NODE" \
    --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv_id="$SLURM_JOB_ID" \
    -m asa.cli.pretrain \
    data="$DATA" data.root="$DATA_ROOT" model=base trainer=paper \
    output_dir="$OUTPUT_DIR" resume=auto "$@"
