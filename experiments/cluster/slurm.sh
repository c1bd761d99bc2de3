#!/bin/bash
# ENAT training under SLURM: one task per GPU, pre-emption safe (requeued jobs resume from last.ckpt).
#   sbatch experiments/cluster/slurm.sh                                      # ENAT-S, 2 nodes x 8 GPUs
#   CONFIG=experiments/enat_b.yaml sbatch --nodes 4 experiments/cluster/slurm.sh --trainer.max_steps 500000
# Global batch = data.init_args.batch_size x SLURM_NTASKS_PER_NODE x SLURM_NNODES (official: 2048).
#SBATCH --job-name=enat
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8          # one task per GPU: Lightning does not spawn processes under srun
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8            # data workers (data.init_args.num_workers) per GPU
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@90          # 90 s before the limit: save last.ckpt, scontrol requeue, stop
#SBATCH --requeue
#SBATCH --open-mode=append           # a requeued job appends to the same log
#SBATCH --output=runs/slurm-%j.out
set -euo pipefail
CONFIG=${CONFIG:-experiments/enat_s.yaml}
# --ckpt_path last on every start: the first run starts fresh (empty run dir), a requeued one resumes from
# the newest valid checkpoint of the run (last.ckpt written at pre-emption, or a periodic/hpc one).
srun enat fit -c "$CONFIG" -c experiments/strategy/ddp.yaml -c experiments/cluster/slurm.yaml \
  --trainer.num_nodes "$SLURM_NNODES" --trainer.devices "$SLURM_NTASKS_PER_NODE" \
  --ckpt_path last "$@"
