"""``benchmarks/pipeline_phase_costs.py`` names every file it writes with the date and the
tag (two tagged runs started together once wrote over each other), and prices splits
from the late-W runs of a measurement that has them."""

from __future__ import annotations

import copy
import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from matris.train.pipeline.costs import load_costs

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "pipeline_phase_costs.py"
MEASURED = ROOT / "benchmarks" / "results" / "pipeline_phase_costs_2026-11-23-pairA.json"


def _module():
    spec = importlib.util.spec_from_file_location("pipeline_phase_costs", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tagged_runs_write_their_own_files(tmp_path, monkeypatch):
    mod = _module()
    measured = json.loads(MEASURED.read_text())
    keep = ("info", "median", "samples", "boundary", "mem")
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    monkeypatch.setattr(mod, "tune_cpu_allocator", lambda: True)
    monkeypatch.setattr(mod, "measure",
                        lambda args: copy.deepcopy({k: measured[k] for k in keep}))
    # A bare tag gets its '-'; one given with its dash (--tag=-b) is not doubled.
    assert mod.main(["--date", "2030-01-01", "--tag", "a", "--repeats", "1"]) == 0
    assert mod.main(["--date", "2030-01-01", "--tag=-b", "--repeats", "1"]) == 0
    for tag in ("-a", "-b"):
        stem = tmp_path / f"pipeline_phase_costs_2030-01-01{tag}"
        for suffix in (".json", ".md", ".costs.json", "_uniform.costs.json"):
            assert Path(f"{stem}{suffix}").is_file(), suffix
        res = json.loads(Path(f"{stem}.json").read_text())
        assert res["date"] == f"2030-01-01{tag}"
        assert res["costs_file"].endswith(f"2030-01-01{tag}.costs.json")
        assert res["derived"]["w_late"]
        eager = load_costs(f"{stem}.costs.json")["eager"]
        assert eager.split_factor["P4"] == max(1.0, res["derived"]["split_factor_P4"])
        assert "W run late" in Path(f"{stem}.md").read_text()
    assert not list(tmp_path.glob("pipeline_phase_costs_2030-01-01.*"))


def test_pooling_concatenates_samples_and_refuses_other_micro_batches(tmp_path, monkeypatch):
    mod = _module()
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    monkeypatch.setattr(mod, "tune_cpu_allocator", lambda: True)
    a = json.loads(MEASURED.read_text())
    b = copy.deepcopy(a)
    for run in b["samples"].values():  # a second run: every action twice as slow
        for key, xs in run.items():
            run[key] = [2 * x for x in xs]
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert mod.main(["--rebuild", str(pa), str(pb), "--date", "2030-01-02"]) == 0
    res = json.loads((tmp_path / "pipeline_phase_costs_2030-01-02-pooled.json").read_text())
    assert res["repeats"] == a["repeats"] + b["repeats"]
    key = "P3:1"
    pooled = a["samples"]["eager"][key] + b["samples"]["eager"][key]
    assert res["samples"]["eager"][key] == pooled
    assert res["median"]["eager"][key] == statistics.median(pooled)
    assert res["median"]["eager"][key] != a["median"]["eager"][key]
    assert "Pooled from 2 runs" in (tmp_path / "pipeline_phase_costs_2030-01-02-pooled.md"
                                    ).read_text()
    b["info"]["angles"] += 1
    pb.write_text(json.dumps(b))
    with pytest.raises(SystemExit, match=r"b\.json: info\['angles'\]"):
        mod.main(["--rebuild", str(pa), str(pb), "--date", "2030-01-03"])
