"""Local outputs appear complete or not at all (tessera_ray.atomic), whatever stops the writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tessera_ray.atomic import atomic_file, atomic_folder, write_bytes

REPO = Path(__file__).resolve().parents[1]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_bytes(tmp_path / "out.bin", b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"half of the new")
            Path(str(tmp) + ".aux.xml").write_text("a library's sidecar")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


def test_a_folder_is_swapped_whole(tmp_path):
    out = tmp_path / "unit"
    with atomic_folder(out) as tmp:
        (tmp / "a.npy").write_bytes(b"1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(out) as tmp:
            (tmp / "b.npy").write_bytes(b"2")
            raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["a.npy"]
    with atomic_folder(out) as tmp:
        (tmp / "b.npy").write_bytes(b"2")
    assert sorted(p.name for p in out.iterdir()) == ["b.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unit"]


def test_two_writers_never_share_a_temporary(tmp_path):
    target = tmp_path / "x"
    with atomic_file(target) as first, atomic_file(target) as second:
        assert first != second
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    assert target.read_bytes() == b"1"  # the outer block ends last, so its content is the one left


def test_a_writer_killed_mid_write_leaves_the_published_file_intact(tmp_path):
    target = write_bytes(tmp_path / "published.bin", b"published")
    code = (
        "import sys, time\n"
        "from tessera_ray.atomic import atomic_file\n"
        "with atomic_file(sys.argv[1]) as tmp:\n"
        "    with open(tmp, 'wb') as fh:\n"
        "        fh.write(b'x' * 1000); fh.flush()\n"
        "        print('writing', flush=True)\n"
        "        time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.1)
    assert target.read_bytes() == b"published"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "published.bin"]
    assert all(name.startswith(".published.bin.") and name.endswith(".partial") for name in leftovers)


def test_a_write_does_not_list_its_folder(tmp_path, monkeypatch):
    """A store's folders hold tens of thousands of files: writing one must not read the others' names."""
    from tessera_ray import atomic

    (tmp_path / "neighbour.json").write_text("{}")
    listed = []
    real = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: listed.append(pattern) or real(self, pattern))
    monkeypatch.setattr(Path, "iterdir", lambda self: listed.append("*") or iter(()))
    atomic.write_bytes(tmp_path / "part.json", b"{}")
    assert listed == [] and (tmp_path / "part.json").read_bytes() == b"{}"
