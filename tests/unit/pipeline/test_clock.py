"""Per-action timing that waits for the device: the clock itself, the phase-cost
measurement and the executor's traced step use it (CUDA paths exercised through a
recording stand-in for ``torch.cuda.synchronize``; no GPU needed)."""

from __future__ import annotations

import contextlib
import time

import torch

from matris.config import preset
from matris.testing import random_model
from matris.train import dist as mdist
from matris.train.config import LossConfig, load_config
from matris.train.pipeline import executor, measure
from matris.train.pipeline.clock import action_clock
from matris.train.pipeline.executor import TRACE_STEP, PipelineRunner
from matris.train.pipeline.testing import counts_of, microbatches


def test_cpu_clock_is_perf_counter():
    assert action_clock("cpu") is time.perf_counter
    assert action_clock(torch.device("cpu")) is time.perf_counter


def test_cuda_clock_waits_for_its_device(monkeypatch):
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    clock = action_clock("cuda:1")
    t0 = clock()
    t1 = clock()
    assert waited == [torch.device("cuda", 1)] * 2
    assert t1 >= t0 > 0


class CountingClock:
    """A clock factory that records the devices asked for and counts readings."""

    def __init__(self):
        self.devices, self.reads = [], 0

    def __call__(self, device):
        self.devices.append(torch.device(device))

        def read():
            self.reads += 1
            return time.perf_counter()
        return read


def test_phase_measurement_times_with_the_device_clock_and_autocast(monkeypatch):
    clock = CountingClock()
    monkeypatch.setattr(measure, "action_clock", clock)
    entered = []

    @contextlib.contextmanager
    def autocast():
        entered.append(1)
        yield

    model = random_model(preset("tiny"), seed=1)
    batch = microbatches(1)[0]
    times, _, _ = measure.run_chain(model, model.stages([1, 2]), batch, LossConfig(),
                                    lazy=False, split=(), autocast=autocast)
    assert clock.devices == [batch.graph.positions.device]
    assert len(times) == 4 * 3 and clock.reads == 2 * len(times)  # start and end each
    assert entered  # the forward ran under the executor's autocast factory


def test_executor_waits_for_the_device_on_the_traced_step_only(monkeypatch, tmp_path):
    clock = CountingClock()
    monkeypatch.setattr(executor, "action_clock", clock)
    groups = mdist.build_groups(mdist.Topology(pp=1, dp=1, gp=1, world_size=1), 0)
    cfg = load_config(None, ["train.dtype=float64", "train.device=cpu", "parallel.pp=1",
                             "parallel.microbatches=2", "parallel.schedule=gpipe4",
                             f"log.out={tmp_path}"])
    runner = PipelineRunner(cfg, random_model(preset("tiny"), seed=3), groups,
                            torch.device("cpu"))
    batches = microbatches(2)
    for step in range(1, TRACE_STEP + 2):
        runner.run(batches, counts_of(batches))
        assert len(clock.devices) == (1 if step >= TRACE_STEP else 0), step
    # The traced step's readings: every action's start and end, the walker's origin and
    # the step's wall time (the last step ran the same program untraced).
    assert clock.reads == 2 * len(runner.last_slices) + 2
    assert (tmp_path / f"pipeline_trace_step{TRACE_STEP}.json").exists()
    runner.sync_timing = True
    runner.run(batches, counts_of(batches))
    assert len(clock.devices) == 2
