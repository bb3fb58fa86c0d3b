"""Record codec: bit-exact round trip of every field, checksums, malformed input."""

from __future__ import annotations

import numpy as np
import pytest

from matris.datasets.codec import RecordError, check_record, decode_record, encode_record
from matris.datasets.schema import ALL_FIELDS, frames_equal, normalize_frame

ALL_LABELS = ("energy", "forces", "stress", "magmoms", "charge", "energy_correction")


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_every_field_bit_exact(rng, make_frame, compress):
    frame = normalize_frame(make_frame(rng, 7, labels=ALL_LABELS))
    assert set(frame) == set(ALL_FIELDS), "fixture must cover every schema field"
    # Values that do not survive a decimal round trip must still be bit-exact.
    frame["positions"][0, 0] = np.nextafter(1.0, 2.0)
    frame["energy"] = np.float64(-1234.5678901234567)
    out = decode_record(encode_record(frame, compress=compress))
    assert frames_equal(frame, out)
    assert out["numbers"].dtype == np.uint8 and out["pbc"].dtype == np.bool_
    assert isinstance(out["energy"], np.float64) and out["energy"].shape == ()
    assert type(out["charge"]) is int and type(out["task"]) is str
    out["positions"][0, 0] = 5.0  # decoded arrays are writable (torch.from_numpy needs it)


def test_absent_labels_stay_absent(rng, make_frame):
    frame = normalize_frame(make_frame(rng, 3, labels=("energy",)))
    out = decode_record(encode_record(frame))
    assert "forces" not in out and "stress" not in out and "magmoms" not in out
    assert frames_equal(frame, out)


@pytest.mark.parametrize("compress", [False, True])
def test_any_flipped_bit_is_detected(rng, make_frame, compress):
    data = bytearray(encode_record(normalize_frame(make_frame(rng, 5)), compress=compress))
    positions = rng.choice(len(data), size=min(60, len(data)), replace=False)
    for pos in positions:
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(RecordError):
            decode_record(bytes(flipped))


def test_truncated_and_garbage_records():
    with pytest.raises(RecordError, match="too short"):
        check_record(b"\x01")
    with pytest.raises(RecordError):
        decode_record(b"\x01\x00" + b"\0" * 30)


def test_version_checked(rng, make_frame):
    import struct
    import zlib

    data = bytearray(encode_record(normalize_frame(make_frame(rng, 2))))
    data[0] = 99
    crc = zlib.crc32(bytes(data[6:]), zlib.crc32(bytes(data[:2])))
    data[2:6] = struct.pack("<I", crc)
    with pytest.raises(RecordError, match="unsupported record version 99"):
        decode_record(bytes(data))


def test_voigt_stress_is_expanded():
    frame = normalize_frame({"numbers": [1], "positions": [[0, 0, 0]], "cell": np.eye(3) * 3,
                             "pbc": [True] * 3, "stress": [1, 2, 3, 4, 5, 6]})
    np.testing.assert_array_equal(frame["stress"], [[1, 6, 5], [6, 2, 4], [5, 4, 3]])
