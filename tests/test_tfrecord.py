"""TFRecord framing and the Example codec, including files written by TensorFlow itself."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fedgan.data.tfrecord import TFRecordWriter, decode_example, encode_example, masked_crc, read_records
from fedgan.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures"


def test_masked_crc_of_a_tensorflow_record_header() -> None:
    """The first 12 bytes of a TF-written file: length, then TensorFlow's masked CRC of it."""
    import crc32c

    assert crc32c.crc32c(b"123456789") == 0xE3069283  # the CRC32C check value
    header = (FIXTURES / "tf_written.tfrecord").read_bytes()[:12]
    assert masked_crc(header[:8]) == int.from_bytes(header[8:], "little")


def test_example_round_trip_all_feature_kinds() -> None:
    image = np.linspace(-1, 1, 37, dtype=np.float32)
    payload = encode_example(
        {"image": image, "label": [-1], "shape": [1, 2, 300], "id": "10_left", "names": [b"a", b"bc"]}
    )
    features = decode_example(payload)
    assert np.array_equal(features["image"], image)
    assert features["label"].tolist() == [-1]
    assert features["shape"].tolist() == [1, 2, 300]
    assert features["id"] == [b"10_left"]
    assert features["names"] == [b"a", b"bc"]


def test_reads_records_written_by_tensorflow() -> None:
    """tests/fixtures/tf_written.tfrecord was written by tf.io.TFRecordWriter (TensorFlow 2.21)."""
    records = [decode_example(p) for p in read_records(FIXTURES / "tf_written.tfrecord")]
    assert len(records) == 2
    assert records[1]["image"].tolist() == [0.5, -1.0, 0.25]
    assert records[1]["label"].tolist() == [-1, 4]
    assert records[1]["id"] == [b"abc", b"d1"]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_file_round_trip_and_stable_bytes(tmp_path: Path, compression: str) -> None:
    payloads = [encode_example({"x": np.full(100, k, np.float32)}) for k in range(5)]
    digests = []
    for name in ("a", "b"):
        with TFRecordWriter(tmp_path / name, compression=compression) as writer:
            for payload in payloads:
                writer.write(payload)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert list(read_records(tmp_path / "a", compression=compression)) == payloads
    assert digests[0] == digests[1]  # no timestamps inside: content hashes are reproducible


def test_corruption_and_truncation_are_reported(tmp_path: Path) -> None:
    with TFRecordWriter(tmp_path / "r") as writer:
        for k in range(3):
            writer.write(encode_example({"x": [k]}))
    data = bytearray((tmp_path / "r").read_bytes())
    flipped = bytearray(data)
    flipped[20] ^= 0xFF
    (tmp_path / "flipped").write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="record 0: data checksum mismatch"):
        list(read_records(tmp_path / "flipped"))
    (tmp_path / "short").write_bytes(bytes(data[:-3]))
    with pytest.raises(DataError, match="record 2: truncated data"):
        list(read_records(tmp_path / "short"))
    (tmp_path / "notgzip").write_bytes(bytes(data))
    with pytest.raises(DataError, match="cannot read TFRecord"):
        list(read_records(tmp_path / "notgzip", compression="gzip"))
