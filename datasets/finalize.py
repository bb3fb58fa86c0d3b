"""Rank 0's last step of a build: merge rank summaries -> index/, splits/, manifest.yaml."""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from . import layout
from .codec import RECORD_VERSION
from .schema import SCHEMA_VERSION, UNITS
from .splits import SPLIT_NAMES, split_by_group
from .stats import NZ, RankStats, fit_reference_energies


def _load_ranks(work: Path, n_ranks: int):
    summaries, arrays = [], []
    for r in range(n_ranks):
        jpath = work / f"rank-{r:05d}.json"
        if not jpath.exists():
            raise RuntimeError(f"rank {r} left no summary ({jpath}); did it fail?")
        summaries.append(json.loads(jpath.read_text()))
        with np.load(work / f"rank-{r:05d}.npz", allow_pickle=False) as z:
            arrays.append({k: z[k] for k in z.files})
    return summaries, arrays


def _hist(values: np.ndarray, bins: int = 10) -> dict:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {}
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _range(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {}
    return {"min": float(values.min()), "max": float(values.max()),
            "mean": float(values.mean())}


def finalize(cfg, files: list[Path], n_ranks: int) -> dict:
    """Merge ``_work/`` of all ranks into the dataset root and write the manifest last."""
    from .build import BuildError

    out = Path(cfg.out)
    work = out / layout.WORK
    summaries, arrays = _load_ranks(work, n_ranks)
    shards = sorted((info for s in summaries for info in s["shards"]),
                    key=lambda i: i["shard_id"])
    by_shard = {}
    for arr in arrays:
        for key, value in arr.items():
            if "_" in key and key.rsplit("_", 1)[1].isdigit():
                by_shard[key] = value
    n_rejected = sum(s["n_rejected"] for s in summaries)
    rejects = sorted((r for s in summaries for r in s["rejects"]),
                     key=lambda r: (r["file"], str(r["frame"])))
    if not shards:
        detail = "; ".join(f"{r['file']}: frame {r['frame']}: {r['reason']}"
                           for r in rejects[:5])
        raise BuildError(f"empty input: no valid frames in {len(files)} file(s)"
                         + (f" ({n_rejected} rejected: {detail})" if n_rejected else ""))

    total = RankStats()
    for s, arr in zip(summaries, arrays):
        part = RankStats()
        part.ctc, part.cty = arr["ctc"], arr["cty"]
        part.element_atoms, part.element_frames = arr["element_atoms"], arr["element_frames"]
        part.labels, part.yty, part.n_fit = s["labels"], s["yty"], s["n_fit"]
        part.stress_min = s["stress_min"] if s["stress_min"] is not None else np.inf
        part.stress_max = s["stress_max"] if s["stress_max"] is not None else -np.inf
        total.merge(part)

    sids = [i["shard_id"] for i in shards]
    natoms = np.concatenate([by_shard[f"natoms_{sid}"] for sid in sids]).astype(np.int32)
    epa = np.concatenate([by_shard[f"epa_{sid}"] for sid in sids]).astype(np.float64)
    fmax = np.concatenate([by_shard[f"fmax_{sid}"] for sid in sids]).astype(np.float32)
    groups = [g for info in shards for g in info.pop("groups")]
    counts = [i["n_frames"] for i in shards]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    index = out / layout.INDEX
    index.mkdir(parents=True, exist_ok=True)
    np.save(index / "natoms.int32.npy", natoms)
    np.save(index / "shard_offsets.int64.npy", offsets)
    np.save(index / "energy_per_atom.float64.npy", epa)
    np.save(index / "fmax.float32.npy", fmax)
    np.savez(index / "metadata.npz", natoms=natoms)

    splits = split_by_group(groups, cfg.split, cfg.seed)
    split_dir = out / layout.SPLITS
    split_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_NAMES:
        np.save(split_dir / f"{name}.int64.npy", splits[name])

    mu, rmse = fit_reference_energies(total.ctc, total.cty, total.yty, total.n_fit)
    present = np.flatnonzero(total.element_atoms)
    manifest = {
        "format": layout.FORMAT,
        "format_version": layout.FORMAT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "record_version": RECORD_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "units": dict(UNITS),
        "n_frames": int(offsets[-1]),
        "n_atoms": int(natoms.sum()),
        "compression": "zlib" if cfg.compress else "none",
        "shards": [{"path": f"{layout.SHARDS}/{i['path']}", "n_frames": i["n_frames"],
                    "bytes": i["bytes"], "sha256": i["sha256"]} for i in shards],
        "source": {"kind": cfg.source,
                   "inputs": [{"path": str(f), "bytes": f.stat().st_size} for f in files],
                   "options": cfg.options.to_dict(), "ranks": n_ranks,
                   "min_distance": cfg.min_distance, "strict": cfg.strict},
        "labels": {k: int(v) for k, v in total.labels.items()},
        "elements": {chemical_symbols[z]: {"Z": int(z), "atoms": int(total.element_atoms[z]),
                                           "frames": int(total.element_frames[z])}
                     for z in present},
        "natoms": {"min": int(natoms.min()), "max": int(natoms.max()),
                   "mean": float(natoms.mean()), "median": float(np.median(natoms)),
                   "histogram": _hist(natoms.astype(float))},
        "energy_per_atom": {**_range(epa), "histogram": _hist(epa)},
        "fmax": {**_range(fmax.astype(np.float64)),
                 "histogram": _hist(fmax.astype(np.float64))},
        "stress": ({"min": total.stress_min, "max": total.stress_max}
                   if np.isfinite(total.stress_min) else {}),
        "reference_energies": {
            "method": "least squares of total energy on element counts (relative ridge 1e-8)",
            "n_frames": int(total.n_fit), "rmse_eV": rmse,
            "per_element": {chemical_symbols[z]: float(mu[z]) for z in range(1, NZ)
                            if total.element_atoms[z] > 0 and total.n_fit > 0}},
        "splits": {"by": "group_id", "fractions": [float(x) for x in _fractions(cfg.split)],
                   "seed": int(cfg.seed), "n_groups": len(set(groups)),
                   "counts": {k: len(v) for k, v in splits.items()},
                   "files": {k: f"{layout.SPLITS}/{k}.int64.npy" for k in SPLIT_NAMES}},
        "rejects": {"count": int(n_rejected), "listed": rejects,
                    "truncated": n_rejected > len(rejects)},
    }
    shutil.rmtree(work)
    layout.write_manifest(out, manifest)
    return manifest


def _fractions(split):
    from .splits import parse_fractions

    return parse_fractions(split)
