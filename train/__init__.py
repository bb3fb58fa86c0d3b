"""matris.train: the mpirun-launched 3D-parallel trainer (``matris-train``, docs/training.md).

Modules (nothing is imported here, so loader workers never pull in MPI):

- ``dist``: launch (mpi4py + torch.distributed), topology (dp × pp × gp), abort hook,
  collectives and point-to-point wrappers: the only users of mpi4py / torch.distributed;
- ``config``: strict YAML → dataclasses, dotted overrides;
- ``sampler`` / ``data`` / ``batch``: DP-aware size-balanced micro-batches, graph-building
  loader, label tensors with masks; ``edge_counts``: cached per-frame edge counts for the
  sampler's ``train.max_edges`` cap;
- ``loss``, ``optim``, ``ema``, ``rng``: the pieces of a step;
- ``step``: the runner seam (``LocalRunner``; pipeline and graph-parallel runners plug in);
- ``trainer`` / ``loop``: the step, validation, checkpoints, resume, export;
- ``checkpointing``, ``export``, ``metrics``, ``plots``, ``cli``;
- ``testing``: EMT-labelled datasets for tests;
- ``pipeline``, ``graph_parallel``: schedules/executor and graph parallelism (own owners).
"""
