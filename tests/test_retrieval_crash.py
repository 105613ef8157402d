"""kill -9 during a large ``PoseIndex.add``: the index must open and hold every committed entry."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from illustpose.retrieval import PoseIndex
from retrieval_poses import entries

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

REPO = Path(__file__).resolve().parents[1]
BATCH = 400

CHILD = """
import sys
from illustpose.retrieval import PoseIndex
from retrieval_poses import entries

path, start = sys.argv[1], int(sys.argv[2])
with PoseIndex(path, create=True) as index:
    index.add(entries(start, start + 10**7), batch_size=%d, on_commit=lambda n: print(start + n, flush=True))
""" % BATCH


def add_then_kill(path: Path, start: int, min_commits: int, delay: float) -> int:
    """Run a child that adds entries start.. in batches; SIGKILL it after ``min_commits`` commits
    plus ``delay`` seconds.  Returns the last committed total the child reported."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(start)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    reported = start
    try:
        for _ in range(min_commits):
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"the child stopped early: {child.stderr.read()}")
            reported = int(line)
        time.sleep(delay)  # land somewhere inside the next batches (building or writing)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    return reported


def test_kill_during_add_keeps_every_committed_entry(tmp_path):
    path = tmp_path / "crash.sqlite"
    first = add_then_kill(path, 0, min_commits=4, delay=0.37)
    with PoseIndex(path) as index:  # opens cleanly after the crash (the WAL is recovered)
        n = len(index)
    assert n >= first and n % BATCH == 0
    second = add_then_kill(path, n, min_commits=3, delay=0.11)  # resume, crash again
    assert second >= n + 3 * BATCH
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = [i for (i,) in con.execute("SELECT id FROM entries ORDER BY id")]
    con.close()
    total = len(ids)
    assert total >= second and total % BATCH == 0 and ids == list(range(1, total + 1))
    with PoseIndex(path) as index:
        expected = list(entries(0, total))
        for i in list(range(0, total, 97)) + [total - 1]:
            stored = index.get(i + 1)
            assert stored.source == f"pose-{i}"
            np.testing.assert_array_equal(stored.pose.keypoints, expected[i].pose.keypoints)
        hit = index.query(expected[-1].pose, k=1)[0]
        assert (hit.id, hit.distance) == (total, 0.0)
        assert len(index.add(entries(total, total + 10)).added_ids) == 10  # still writable
