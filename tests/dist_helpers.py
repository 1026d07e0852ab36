"""Functions run in spawned processes by test_distributed.py, in a module that imports
only torch (a spawned process imports the module of the function it runs)."""

import time
from datetime import timedelta


def fails_on_rank_1(local_rank, port):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://localhost:{port}",
        rank=local_rank,
        world_size=2,
        timeout=timedelta(seconds=120),
    )
    if local_rank == 1:
        time.sleep(0.5)
        raise ValueError("boom on purpose")
    dist.barrier()  # waits for rank 1, which never comes
