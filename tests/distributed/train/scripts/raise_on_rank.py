"""Launched under mpirun: rank R raises after init while the others block in a collective.

Usage: raise_on_rank.py R. The job must end promptly with a non-zero exit code.
"""

import sys
import time

import torch

from matris.train import dist as mdist

bad = int(sys.argv[1])
env = mdist.init_distributed(device="cpu", timeout_s=600)
if env.rank == bad:
    time.sleep(0.5)
    raise RuntimeError(f"deliberate failure on rank {env.rank}")
# The other ranks wait in a collective that the failed rank never joins; without the
# abort hook they would hang for the whole 600 s timeout.
t = torch.ones(1)
torch.distributed.all_reduce(t)
print("UNREACHABLE", flush=True)
