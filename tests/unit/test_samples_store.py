"""The sample store on a real filesystem: atomic files, index, limits, labels, encryption."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from perceptd.daemon.samples import crypto
from perceptd.daemon.samples.record import Sample, check_sample_id, decode, encode, new_sample_id
from perceptd.daemon.samples.store import (
    INDEX,
    Limits,
    SampleNotFound,
    SampleStore,
    StoreBusy,
)

MODS = ("vision", "face", "audio", "text")


def make_sample(i: int = 0, *, wall_ns: int | None = None, text: str | None = None,
                jpeg: bytes | None = None, labels: dict[str, int] | None = None) -> Sample:
    rng = np.random.default_rng(i)
    x = rng.normal(size=(4, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    mask = np.array([1, 0, 1, 0], np.float32)
    x[mask == 0] = 0
    wall = wall_ns or time.time_ns()
    return Sample(
        id=new_sample_id(wall), created_ns=wall, t_capture_ns=123, trigger="random", event=None,
        score=None, model_version="v1", encoder_fp="fp", events=("a", "b"),
        scores=np.array([0.2, 0.7], np.float32), x=x, mask=mask, modality_names=MODS,
        sources={"vision": "camera0", "audio": "mic0"}, tops={"vision": [["tabby cat", 0.8]]},
        vision_features=rng.normal(size=1280).astype(np.float32), text=text, jpeg=jpeg,
        labels=labels or {},
    )


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_round_trip_with_private_permissions(tmp_path: Path) -> None:
    root = tmp_path / "samples"
    with SampleStore(root, writer=True) as store:
        s = make_sample(1, jpeg=b"\xff\xd8jpeg")
        assert store.put(s) is None
        back = store.get(s.id)
        np.testing.assert_array_equal(back.x, s.x)
        np.testing.assert_array_equal(back.vision_features, s.vision_features)
        assert back.jpeg == s.jpeg and back.modalities == ("vision", "audio")
        assert back.tops == s.tops and back.sources == s.sources
        path = store.path_of(s.id)
    assert mode(root) == 0o700 and mode(path.parent) == 0o700 and mode(root / "objects") == 0o700
    assert mode(path) == 0o600 and mode(root / INDEX) == 0o600
    for side in root.glob(INDEX + "-*"):  # WAL / SHM inherit the index's mode
        assert mode(side) == 0o600


@pytest.mark.parametrize("bad", ["../../etc/passwd", "now", "", "20261201T141706-XYZ", "a/b",
                                 "20261201T141706-0123456789ab/../x", 42])
def test_sample_ids_are_checked_before_any_path_is_built(tmp_path: Path, bad) -> None:
    with SampleStore(tmp_path / "s", writer=True) as store:
        with pytest.raises(ValueError):
            store.path_of(bad)
        with pytest.raises(ValueError):
            store.label(bad, "a")
    assert check_sample_id(new_sample_id())


def test_encrypted_samples_need_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "samples.key"
    key = crypto.load_key(key_file, create=True)
    assert mode(key_file) == 0o600 and len(key) == 32
    root = tmp_path / "enc"
    secret_text = "turn on the lights in the bedroom"
    with SampleStore(root, cipher=crypto.Cipher(key), encrypt=True, writer=True) as store:
        s = make_sample(2, text=secret_text, jpeg=b"\xff\xd8secretjpeg")
        assert store.put(s) is None
        back = store.get(s.id)  # round trip with the key
        assert back.text == secret_text and back.jpeg == s.jpeg
        np.testing.assert_array_equal(back.x, s.x)
        blob = store.read_blob(s.id)
    assert secret_text.encode() not in blob and s.x.tobytes()[:64] not in blob
    index_bytes = b"".join(p.read_bytes() for p in root.glob(INDEX + "*"))
    assert secret_text.encode() not in index_bytes and b"secretjpeg" not in index_bytes
    with SampleStore(root) as reader:  # no key
        with pytest.raises(crypto.SampleCryptoError, match="encrypted"):
            reader.get(s.id)
    other = crypto.Cipher(os.urandom(32))
    with pytest.raises(crypto.SampleCryptoError, match="wrong key"):
        decode(blob, s.id, other)
    with pytest.raises(crypto.SampleCryptoError):  # a file renamed to another id fails
        decode(blob, new_sample_id(), crypto.Cipher(key))
    os.chmod(key_file, 0o644)
    with pytest.raises(crypto.SampleCryptoError, match="group/others"):
        crypto.load_key(key_file)


def test_quota_without_rotation_drops_and_counts(tmp_path: Path) -> None:
    size = len(encode(make_sample(0)))
    with SampleStore(tmp_path / "q", limits=Limits(max_bytes=3 * size + 10, rotate=False),
                     writer=True) as store:
        results = [store.put(make_sample(i)) for i in range(6)]
        assert results[:3] == [None] * 3 and results[3:] == ["quota"] * 3
        assert store.dropped["quota"] == 3 and len(store.list()) == 3


def test_quota_with_rotation_evicts_oldest_unlabelled(tmp_path: Path) -> None:
    size = len(encode(make_sample(0)))
    t0 = time.time_ns() - 10**12
    with SampleStore(tmp_path / "r", limits=Limits(max_bytes=3 * size + 10), writer=True) as store:
        first = [make_sample(i, wall_ns=t0 + i * 10**9) for i in range(3)]
        for s in first:
            assert store.put(s) is None
        store.label(first[0].id, "a")  # the oldest, but labelled: kept
        newer = make_sample(9, wall_ns=t0 + 10 * 10**9)
        assert store.put(newer) is None
        ids = {i.id for i in store.list()}
        assert ids == {first[0].id, first[2].id, newer.id}
        assert store.total_bytes <= 3 * size + 10


def test_disk_reserve_drops_instead_of_filling_the_disk(tmp_path: Path) -> None:
    with SampleStore(tmp_path / "d", writer=True) as store:
        store.limits = Limits(min_free_bytes=store.free_bytes() + (1 << 40))
        assert store.put(make_sample(1)) == "disk_full"
        assert store.dropped["disk_full"] == 1 and store.list() == []


def test_retention_by_age_keeps_labelled(tmp_path: Path) -> None:
    now = time.time_ns()
    with SampleStore(tmp_path / "a", limits=Limits(max_age_s=3600), writer=True) as store:
        old, old_labelled, fresh = (make_sample(1, wall_ns=now - 7200 * 10**9),
                                    make_sample(2, wall_ns=now - 7200 * 10**9), make_sample(3))
        for s in (old, old_labelled, fresh):
            store.put(s)
        store.label(old_labelled.id, "b")
        assert store.enforce_retention(now) == 1
        assert {i.id for i in store.list()} == {old_labelled.id, fresh.id}
        assert not store.path_of(old.id).exists()


def test_labels_none_negative_and_missing(tmp_path: Path) -> None:
    with SampleStore(tmp_path / "l", writer=True) as store:
        s = make_sample(1)
        store.put(s)
        store.label(s.id, "a")
        store.label(s.id, "b", 0)
        assert store.info(s.id).labels == {"a": 1, "b": 0}
        store.label(s.id, "none")  # "shows none of the events" replaces the others
        assert store.info(s.id).labels == {"none": 1}
        store.label(s.id, "a")
        assert store.info(s.id).labels == {"a": 1}
        assert store.list(labelled=True)[0].id == s.id and store.list(labelled=False) == []
        with pytest.raises(SampleNotFound):
            store.label(new_sample_id(), "a")
        assert store.unlabel(s.id) == 1 and store.info(s.id).labels == {}


def test_writer_sweeps_partial_and_orphaned_files(tmp_path: Path) -> None:
    root = tmp_path / "c"
    with SampleStore(root, writer=True) as store:
        kept, lost_file = make_sample(1), make_sample(2)
        store.put(kept)
        store.put(lost_file)
        orphan = make_sample(3)
        orphan_path = store.path_of(orphan.id)
        orphan_path.write_bytes(encode(orphan))  # renamed but never indexed (crash)
        (root / "tmp" / f"{make_sample(4).id}.part").write_bytes(b"PDSMP1\x00half")
        store.path_of(lost_file.id).unlink()  # indexed, file gone (power loss before fsync)
    with SampleStore(root, writer=True) as store:
        assert [i.id for i in store.list()] == [kept.id]
        assert not orphan_path.exists() and not any((root / "tmp").iterdir())
        assert store.get(kept.id).id == kept.id


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    with SampleStore(tmp_path / "w", writer=True):
        with pytest.raises(StoreBusy):
            SampleStore(tmp_path / "w", writer=True)
        SampleStore(tmp_path / "w").close()  # readers are fine


def test_purge_and_export(tmp_path: Path) -> None:
    now = time.time_ns()
    with SampleStore(tmp_path / "p", writer=True) as store:
        old = make_sample(1, wall_ns=now - 3 * 86400 * 10**9)
        new = make_sample(2, jpeg=b"\xff\xd8x")
        store.put(old)
        store.put(new)
        store.label(new.id, "a")
        assert store.export(tmp_path / "out") == 2
        lines = (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
        assert len(lines) == 2 and (tmp_path / "out" / f"{new.id}.jpg").read_bytes() == b"\xff\xd8x"
        with np.load(tmp_path / "out" / f"{new.id}.npz") as z:
            np.testing.assert_array_equal(z["x"], new.x)
        assert store.purge(older_than_s=86400) == 1
        assert [i.id for i in store.list()] == [new.id]


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, timeout=10)
    return r.returncode == 0


def test_full_filesystem_drops_and_counts(tmp_path: Path) -> None:
    """A real ENOSPC (a 256 KiB tmpfs): samples are dropped and counted, nothing raises."""
    mnt = tmp_path / "tiny"
    if os.geteuid() != 0 or not _mount_tmpfs(mnt, "256k"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with SampleStore(mnt / "s", writer=True) as store:
            results = [store.put(make_sample(i, jpeg=os.urandom(20_000))) for i in range(30)]
            assert None in results and "disk_full" in results
            assert store.dropped["disk_full"] >= 1
            stored = store.list()
            for info in stored:  # what is indexed is complete
                assert store.get(info.id).jpeg is not None
            assert not any((mnt / "s" / "tmp").iterdir())
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)
