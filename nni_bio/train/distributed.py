"""Multi-GPU training with ``torchrun``: process-group setup from the environment.

``torchrun --nproc_per_node=4 -m nni_bio.cli train ...`` starts one process per GPU with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set; :func:`init_from_env` joins the process group
(NCCL on CUDA, gloo on CPU) and picks the local GPU. :func:`nni_bio.train.training.train` then wraps the
model in DistributedDataParallel and shards the data with a DistributedSampler; rank 0 alone
writes checkpoints, TensorBoard logs and ``result.json``.

Tested only as a one-process gloo group on CPU (``tests/test_final_training.py``); multi-GPU runs
have not been exercised by the test suite.
"""

from __future__ import annotations

import os

import torch


def requested() -> bool:
    """True when launched by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str) -> str:
    """Join the process group described by the environment; return this process's device.

    ``device`` ``cuda`` becomes ``cuda:LOCAL_RANK``; ``cpu`` stays (gloo backend).
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def is_main() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["init_from_env", "is_main", "requested", "shutdown"]
