"""Frame schema: field names, dtypes, shapes and units (docs/architecture.md section 1).

A *frame* is a ``dict`` of numpy values. Units are eV, Å, eV/Å and eV/Å³ with ASE's stress
sign (positive = tensile). A label a frame does not have is absent from the dict.

``normalize_frame`` coerces a source's values to the exact dtypes below and raises
:class:`FrameError` (with a human-readable reason) for frames that must be rejected; see
:mod:`matris.datasets.validate` for the physical checks (distances, singular cells).
"""

from __future__ import annotations

import numpy as np

SCHEMA_VERSION = 1
MAX_Z = 118

UNITS = {
    "positions": "Å", "cell": "Å", "energy": "eV", "forces": "eV/Å",
    "stress": "eV/Å^3 (ASE sign: positive = tensile)", "magmoms": "μB",
    "energy_correction": "eV", "charge": "e", "spin": "multiplicity (2S+1) or as given",
}

# name -> (dtype, shape spec). "N" is the atom count; () is a scalar.
ARRAY_FIELDS: dict[str, tuple[np.dtype, tuple]] = {
    "numbers": (np.dtype(np.uint8), ("N",)),
    "positions": (np.dtype(np.float64), ("N", 3)),
    "cell": (np.dtype(np.float64), (3, 3)),
    "pbc": (np.dtype(np.bool_), (3,)),
    "energy": (np.dtype(np.float64), ()),
    "forces": (np.dtype(np.float64), ("N", 3)),
    "stress": (np.dtype(np.float64), (3, 3)),
    "magmoms": (np.dtype(np.float64), ("N",)),
    "energy_correction": (np.dtype(np.float64), ()),
}
INT_FIELDS = ("charge", "spin")
STR_FIELDS = ("dataset", "task", "source_id", "group_id")
REQUIRED = ("numbers", "positions", "cell", "pbc")
LABELS = ("energy", "forces", "stress", "magmoms", "charge", "spin", "energy_correction")
ALL_FIELDS = tuple(ARRAY_FIELDS) + INT_FIELDS + STR_FIELDS


class FrameError(ValueError):
    """A frame violates the schema; ``reason`` is a short message for the reject report."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def voigt_to_3x3(v) -> np.ndarray:
    """ASE Voigt order (xx, yy, zz, yz, xz, xy), shape (6,) -> symmetric (3, 3)."""
    xx, yy, zz, yz, xz, xy = (float(x) for x in v)
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]], dtype=np.float64)


def as_stress(value, what: str = "stress") -> np.ndarray:
    """Accept a (3,3), (9,) or Voigt (6,) stress and return float64 (3,3)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape == (6,):
        return voigt_to_3x3(arr)
    if arr.shape in ((9,), (3, 3)):
        return arr.reshape(3, 3).copy()
    raise FrameError(f"{what} has shape {arr.shape}, expected (3,3), (9,) or Voigt (6,)")


def _shape(spec: tuple, n: int) -> tuple:
    return tuple(n if s == "N" else s for s in spec)


def normalize_frame(frame: dict) -> dict:
    """Return a copy of ``frame`` with canonical dtypes/shapes; raise FrameError if invalid.

    Checks: required keys, atomic numbers in 1..118, shapes consistent with N = len(numbers),
    all floats finite. Unknown keys are an error (they would silently vanish on encode).
    """
    unknown = set(frame) - set(ALL_FIELDS)
    if unknown:
        raise FrameError(f"unknown field(s) {sorted(unknown)}")
    for key in REQUIRED:
        if key not in frame or frame[key] is None:
            raise FrameError(f"missing required field '{key}'")
    raw_numbers = np.asarray(frame["numbers"])
    if raw_numbers.ndim != 1:
        raise FrameError(f"numbers has shape {raw_numbers.shape}, expected (N,)")
    if raw_numbers.size == 0:
        raise FrameError("structure has no atoms")
    if not np.issubdtype(raw_numbers.dtype, np.integer):
        raise FrameError(f"numbers has dtype {raw_numbers.dtype}, expected integers")
    bad = (raw_numbers < 1) | (raw_numbers > MAX_Z)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FrameError(f"unknown atomic number {int(raw_numbers[i])} at atom {i} "
                         f"(allowed 1..{MAX_Z})")
    n = raw_numbers.size
    out: dict = {}
    for key, (dtype, spec) in ARRAY_FIELDS.items():
        if key not in frame or frame[key] is None:
            continue
        value = frame[key]
        arr = as_stress(value) if key == "stress" else np.asarray(value)
        want = _shape(spec, n)
        if arr.shape != want:
            raise FrameError(f"{key} has shape {arr.shape}, expected {want}")
        if dtype.kind == "f":
            if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
                raise FrameError(f"{key} has non-real dtype {arr.dtype}")
            arr = arr.astype(np.float64, copy=True)
            if not np.isfinite(arr).all():
                raise FrameError(f"{key} contains NaN or inf")
        else:
            arr = arr.astype(dtype, copy=True)
        out[key] = arr[()] if arr.ndim == 0 else arr
    for key in INT_FIELDS:
        if frame.get(key) is not None:
            value = frame[key]
            if isinstance(value, (float, np.floating)) and not float(value).is_integer():
                raise FrameError(f"{key}={value!r} is not an integer")
            out[key] = int(value)
    for key in STR_FIELDS:
        if frame.get(key) is not None:
            out[key] = str(frame[key])
    return out


def frames_equal(a: dict, b: dict) -> bool:
    """Bit-exact equality of two frames (same keys, same dtypes, same bytes)."""
    if set(a) != set(b):
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, (str, int)) and not isinstance(x, np.generic):
            if type(x) is not type(y) or x != y:
                return False
            continue
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            return False
    return True
