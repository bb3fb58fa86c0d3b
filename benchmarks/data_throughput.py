"""Dataset-layer throughput: build rate and random-read rate, mshard vs aselmdb.

Generates N synthetic frames (8–200 atoms on a jittered grid, random elements and labels;
realistic sizes, not realistic chemistry: only bytes and shapes matter here), then measures

* build: frames/s of (a) the core pipeline from in-memory frames (schema normalisation,
  physical checks, encoding, LMDB writes, index/splits/manifest) and (b) end to end from an
  ``.aselmdb`` file through ``matris-data build --source aselmdb``;
* random reads (frames/s, a fixed random sample of indices):
  - ours: ``ShardedDataset[i]`` in one process, and through a torch DataLoader (2 workers);
  - aselmdb via our direct reader (lmdb + zlib + json -> frame dict), one process and
    DataLoader (2 workers);
  - aselmdb via the real reader (ase-db-backends ``LMDBDatabase``: ``_get_row`` +
    ``toatoms()``, what fairchem's AseDBDataset does) when a side venv has it
    (``--side-python``), one process.

The aselmdb file is written by ``matris-data export --to aselmdb`` (same layout as
ase-db-backends; tests check the real reader accepts it). Data goes to ``--workdir``
(default /tmp), never into the repository. Results: JSON + Markdown in benchmarks/results/.

    .venv/bin/python benchmarks/data_throughput.py --frames 20000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from matris.datasets import BuildConfig, ShardedDataset, SourceOptions, build_dataset
from matris.datasets.export import export_aselmdb
from matris.datasets.sources.aselmdb import decode_value, row_to_frame

DATE = "2026-11-21"
MACHINE = "2-vCPU CPU VM"
RESULTS = Path(__file__).resolve().parent / "results"


def make_frames(n: int, seed: int = 0):
    """Yield n frames with 8..200 atoms (uniform), energies/forces/stress, 4 frames/group."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        natoms = int(rng.integers(8, 201))
        side = int(np.ceil(natoms ** (1 / 3)))
        grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
        a = 2.3 * side
        cell = np.diag([a, a, a]) + rng.normal(0, 0.05, (3, 3))
        frac = (grid[:natoms] + 0.5 + rng.normal(0, 0.05, (natoms, 3))) / side
        s = rng.normal(0, 0.01, (3, 3))
        yield {"numbers": rng.integers(1, 95, natoms).astype(np.uint8),
               "positions": frac @ cell, "cell": cell, "pbc": np.ones(3, bool),
               "energy": np.float64(rng.normal(-4.0 * natoms, 2.0)),
               "forces": rng.normal(0, 0.5, (natoms, 3)), "stress": s + s.T,
               "dataset": "bench", "source_id": f"bench:{i}", "group_id": f"g{i // 4}"}


class _MemorySource:
    """In-memory frames as a build source (times the pipeline without parsing cost)."""

    name = "memory"
    patterns = ()

    def __init__(self, frames):
        self.frames = frames
        self.options = SourceOptions()

    def expand(self, inputs):
        return [Path(inputs[0])]

    def iter_file(self, path):
        yield from enumerate(self.frames)

    def convert(self, path, index, raw):
        return dict(raw)


class AseLmdbDirect:
    """Random access to an .aselmdb with our direct reader (lazy env per process)."""

    def __init__(self, path):
        self.path = str(path)
        self._env = self._pid = None
        self.opts = SourceOptions()

    def __len__(self):
        env = self._open()
        with env.begin() as txn:
            return int(decode_value(txn.get(b"nextid"))) - 1

    def _open(self):
        import lmdb

        if self._pid != os.getpid():
            self._env = lmdb.open(self.path, subdir=False, readonly=True, lock=False,
                                  readahead=False, meminit=False)
            self._pid = os.getpid()
        return self._env

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __getitem__(self, i):
        with self._open().begin() as txn:
            row = decode_value(txn.get(str(i + 1).encode()))
        frame = row_to_frame(row, self.opts)
        frame.pop("_info")
        return frame


def collate_list(batch):
    return batch


def time_reads(ds, order, repeat_first=False) -> float:
    """frames/s of ds[i] over the index order."""
    t0 = time.perf_counter()
    for i in order:
        ds[int(i)]
    return len(order) / (time.perf_counter() - t0)


def time_loader(ds, order, workers=2, batch=32) -> float:
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(ds, [int(i) for i in order]), batch_size=batch, shuffle=False,
                        num_workers=workers, collate_fn=collate_list,
                        multiprocessing_context="fork", persistent_workers=False)
    t0 = time.perf_counter()
    n = sum(len(b) for b in loader)
    return n / (time.perf_counter() - t0)


REAL_READER = r"""
import sys, time, json
import numpy as np
from ase_db_backends.aselmdb import LMDBDatabase
db = LMDBDatabase(sys.argv[1], readonly=True, use_lock_file=False, readahead=False)
order = json.loads(sys.argv[2])
t0 = time.perf_counter()
for i in order:
    atoms = db._get_row(db.ids[i]).toatoms()
    atoms.get_potential_energy(); atoms.get_forces(); atoms.get_stress()
print(json.dumps({"rate": len(order) / (time.perf_counter() - t0)}))
"""


def real_reader_rate(side_python: str | None, path: Path, order) -> float | None:
    if not side_python or not Path(side_python).exists():
        return None
    proc = subprocess.run([side_python, "-c", REAL_READER, str(path),
                           json.dumps([int(i) for i in order])],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout)["rate"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--reads", type=int, default=5000, help="random reads per method")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/matris_bench_data"))
    p.add_argument("--side-python", default="/root/side-envs/aselmdb/bin/python",
                   help="python of a venv with ase-db-backends (real aselmdb reader)")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--tag", default=f"{DATE}_{MACHINE.replace(' ', '-')}")
    args = p.parse_args(argv)

    load_start = os.getloadavg()
    work = args.workdir
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    print(f"generating {args.frames} frames ...", flush=True)
    frames = list(make_frames(args.frames))
    natoms = np.array([len(f["numbers"]) for f in frames])

    import matris.datasets.build as build_mod

    real_make_source = build_mod.make_source
    build_mod.make_source = lambda name, options=None: _MemorySource(frames)
    (work / "memory").write_text("in-memory frames\n")  # the builder stats its inputs
    try:
        t0 = time.perf_counter()
        build_dataset(BuildConfig(source="memory", inputs=[str(work / "memory")],
                                  out=work / "ours", progress=False))
        build_core = args.frames / (time.perf_counter() - t0)
    finally:
        build_mod.make_source = real_make_source
    print(f"core build: {build_core:.0f} frames/s", flush=True)

    aselmdb = work / "bench.aselmdb"
    t0 = time.perf_counter()
    export_aselmdb(frames, aselmdb, progress=False)
    export_rate = args.frames / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    build_dataset(BuildConfig(source="aselmdb", inputs=[aselmdb], out=work / "from_aselmdb",
                              progress=False))
    build_e2e = args.frames / (time.perf_counter() - t0)
    print(f"aselmdb -> mshard build: {build_e2e:.0f} frames/s", flush=True)

    ours = ShardedDataset(work / "ours")
    direct = AseLmdbDirect(aselmdb)
    order = np.random.default_rng(1).permutation(args.frames)[: args.reads]
    results = {
        "ours_1proc": time_reads(ours, order),
        "aselmdb_direct_1proc": time_reads(direct, order),
    }
    print(results, flush=True)
    ours.close()
    direct._env.close()  # a forked worker may not inherit an open env of the same file
    results["ours_loader2"] = time_loader(ShardedDataset(work / "ours"), order)
    results["aselmdb_direct_loader2"] = time_loader(AseLmdbDirect(aselmdb), order)
    results["aselmdb_real_1proc"] = real_reader_rate(args.side_python, aselmdb, order)
    print(results, flush=True)

    sizes = {"mshard_bytes": sum(f.stat().st_size for f in (work / "ours/shards").iterdir()),
             "aselmdb_bytes": aselmdb.stat().st_size}
    out = {
        "date": DATE, "machine": MACHINE, "platform": platform.platform(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "frames": args.frames, "random_reads": args.reads,
        "natoms": {"min": int(natoms.min()), "max": int(natoms.max()),
                   "mean": float(natoms.mean())},
        "build_frames_per_s": {"core_in_memory": build_core, "from_aselmdb": build_e2e,
                               "aselmdb_export_writer": export_rate},
        "random_read_frames_per_s": results,
        "speedup_vs_aselmdb": {
            "1proc_vs_direct": results["ours_1proc"] / results["aselmdb_direct_1proc"],
            "loader2_vs_direct": results["ours_loader2"] / results["aselmdb_direct_loader2"],
            "1proc_vs_real": (results["ours_1proc"] / results["aselmdb_real_1proc"]
                              if results["aselmdb_real_1proc"] else None)},
        "bytes": sizes,
        "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    jpath = args.results / f"data_throughput_{args.tag}.json"
    jpath.write_text(json.dumps(out, indent=2) + "\n")
    (args.results / f"data_throughput_{args.tag}.md").write_text(render_md(out))
    print(f"wrote {jpath}")
    shutil.rmtree(work)
    return out


def render_md(r: dict) -> str:
    rr, b, sp = r["random_read_frames_per_s"], r["build_frames_per_s"], r["speedup_vs_aselmdb"]

    def f(x):
        return "n/a" if x is None else f"{x:,.0f}"

    def x(v):
        return "n/a" if v is None else f"{v:.1f}×"

    direct1, direct2 = f(rr["aselmdb_direct_1proc"]), f(rr["aselmdb_direct_loader2"])
    real1, core = f(rr["aselmdb_real_1proc"]), f(b["core_in_memory"])
    return f"""# Dataset throughput: mshard vs aselmdb ({r['date']}, {r['machine']})

{r['frames']:,} synthetic frames, {r['natoms']['min']}–{r['natoms']['max']} atoms
(mean {r['natoms']['mean']:.0f}); energies, forces, stress. {r['random_reads']:,} random reads
per method (same index sample, page cache warm). Load average at start
{r['loadavg_start'][0]:.2f} / end {r['loadavg_end'][0]:.2f} (1-min; the 2 cores are shared
with other jobs, so rates are indicative). `benchmarks/data_throughput.py`.

## Random reads (frames/s)

| reader | 1 process | DataLoader, 2 workers |
|---|---:|---:|
| **mshard** (`ShardedDataset[i]`) | {f(rr['ours_1proc'])} | {f(rr['ours_loader2'])} |
| aselmdb, our direct reader (lmdb+zlib+json) | {direct1} | {direct2} |
| aselmdb, real reader (ase-db-backends `_get_row` + `toatoms`) | {real1} | – |

Speed-up of mshard: {x(sp['1proc_vs_direct'])} vs the direct aselmdb reader (1 process),
{x(sp['loader2_vs_direct'])} with 2 loader workers, {x(sp['1proc_vs_real'])} vs the real
reader. Goal: ≥ 3×.

## Build (frames/s)

| path | frames/s |
|---|---:|
| core pipeline from memory (normalise, checks, encode, write, index, manifest) | {core} |
| `build --source aselmdb` end to end | {f(b['from_aselmdb'])} |
| aselmdb writer (`export --to aselmdb`), for reference | {f(b['aselmdb_export_writer'])} |

Bytes on disk: mshard {r['bytes']['mshard_bytes'] / 2**20:.1f} MiB (uncompressed records),
aselmdb {r['bytes']['aselmdb_bytes'] / 2**20:.1f} MiB (zlib JSON).
"""


if __name__ == "__main__":
    main()
