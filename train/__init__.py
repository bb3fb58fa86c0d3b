"""matris.train: the mpirun-launched 3D-parallel trainer."""
