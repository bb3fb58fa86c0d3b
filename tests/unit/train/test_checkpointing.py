"""Atomic checkpoint writes, the COMPLETE marker, keep-last-k, RNG capture."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from matris.train import checkpointing as ck
from matris.train.rng import rng_state, set_rng_state


def _save(root, step, value, keep_last=2):
    return ck.save_checkpoint(root, step, 0, {"w": torch.full((3,), float(value)), "step": step},
                              world_size=1, config_yaml="a: 1\n", meta={"topology": {"dp": 1}},
                              keep_last=keep_last)


def test_save_load_latest_and_keep_last(tmp_path):
    for step in (10, 20, 30):
        _save(tmp_path, step, step)
    found = ck.list_checkpoints(tmp_path)
    assert [s for s, _ in found] == [20, 30]
    latest = ck.latest_checkpoint(tmp_path)
    part = ck.load_checkpoint(latest, rank=0, world_size=1, expect={"topology": {"dp": 1}})
    assert part["step"] == 30 and torch.all(part["w"] == 30)
    assert (latest / "config.yaml").read_text() == "a: 1\n"
    with pytest.raises(ValueError, match="ranks"):
        ck.load_checkpoint(latest, rank=0, world_size=2)
    with pytest.raises(ValueError, match="topology"):
        ck.load_checkpoint(latest, rank=0, world_size=1, expect={"topology": {"dp": 2}})


def test_resume_refuses_other_stage_cuts(tmp_path):
    """Pipeline parts hold their stages' parameters: other cuts (a re-measured cost file)
    would put them on the wrong ranks; the message names both and the way back."""
    path = ck.save_checkpoint(tmp_path, 5, 0, {"step": 5}, world_size=1, config_yaml="",
                              meta={"topology": {"pp": 2}, "stage_cuts": [1, 3]})
    index = ck.read_index(path)
    ck.check_stage_cuts(path, index, [1, 3])
    with pytest.raises(ValueError, match=r"stage cuts \[1, 3\]; this run cuts the model at "
                                         r"\[2, 3\].*parallel.stage_cuts=\[1, 3\]"):
        ck.check_stage_cuts(path, index, [2, 3])
    old = ck.read_index(_save(tmp_path / "old", 1, 1))   # written before cuts were recorded
    ck.check_stage_cuts(path, old, [2, 3])


def test_incomplete_checkpoint_is_never_picked(tmp_path):
    _save(tmp_path, 10, 1)
    half = ck.step_dir(tmp_path, 20)
    half.mkdir()
    torch.save({"w": torch.zeros(3)}, half / ck.part_name(0))  # parts but no COMPLETE
    assert ck.latest_checkpoint(tmp_path) == ck.step_dir(tmp_path, 10)
    with pytest.raises(FileNotFoundError, match="COMPLETE"):
        ck.read_index(half)
    _save(tmp_path, 30, 3, keep_last=5)  # a later save prunes the stale incomplete one
    assert not half.exists()


_WRITER = textwrap.dedent("""
    import sys, torch
    from matris.train.checkpointing import atomic_torch_save
    path = sys.argv[1]
    big = torch.ones(48 * 2**20 // 8, dtype=torch.float64)  # 48 MB per write
    atomic_torch_save({"value": 0, "big": big * 0}, path)
    print("first", flush=True)
    i = 1
    while True:
        atomic_torch_save({"value": i, "big": big * i}, path)
        i += 1
""")


def test_kill_9_during_write_leaves_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "part.pt"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().strip() == "first"
        deadline = time.monotonic() + 60
        # Wait until a later write is in flight (its temp file exists), then kill -9.
        while not any(p.name.startswith(".part.pt.tmp") for p in tmp_path.iterdir()):
            assert time.monotonic() < deadline, "writer never started a second write"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    state = ck.load_part(path)
    assert torch.all(state["big"] == state["value"])  # a whole earlier write, not a torn one
    leftovers = [p for p in tmp_path.iterdir() if p.name != "part.pt"]
    assert leftovers, "the kill was meant to interrupt a write"


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.random(), np.random.rand(), torch.rand(2)
    state = rng_state()
    ck.atomic_torch_save({"rng": state}, tmp_path / "r.pt")
    want = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(ck.load_part(tmp_path / "r.pt")["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert want[0] == got[0] and want[1] == got[1] and torch.equal(want[2], got[2])
