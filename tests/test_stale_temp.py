"""
Temporary files of a backup or a download killed with SIGKILL are removed
by the next run in the same directory; a live writer's are left alone.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

from twisted.trial.unittest import TestCase

from kezchat import tempfiles
from kezchat.p2p.transfer import _Sink
from kezchat.tools.backup import backup_database
from tests.support import temp_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a writer that creates its temporary file, says so, and waits to be killed
WRITER = (
    "import os, sys, time\n"
    "from kezchat import tempfiles\n"
    "fd, path = tempfiles.create(sys.argv[1], sys.argv[2], sys.argv[3])\n"
    "os.write(fd, b'half')\n"
    "print(path, flush=True)\n"
    "time.sleep(60)\n"
)


class StaleTempTests(TestCase):
    timeout = 60

    def writer(self, directory: str, name: str, suffix: str) -> tuple[subprocess.Popen, str]:
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, directory, name, suffix],
            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ROOT},
        )
        self.addCleanup(process.wait)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        assert process.stdout is not None
        path = process.stdout.readline().decode().strip()
        self.assertTrue(os.path.exists(path))
        return process, path

    def killed_writer(self, directory: str, name: str, suffix: str) -> str:
        process, path = self.writer(directory, name, suffix)
        process.send_signal(signal.SIGKILL)
        process.wait()
        return path

    def test_backup_removes_a_killed_backups_partial(self) -> None:
        directory = temp_dir(self)
        source = os.path.join(directory, "live.db")
        conn = sqlite3.connect(source)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
        stale = self.killed_writer(directory, "monday.db", ".partial")
        _live, running = self.writer(directory, "tuesday.db", ".partial")
        backup_database(source, os.path.join(directory, "wednesday.db"))
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(running))
        leftovers = [n for n in os.listdir(directory) if n.endswith(".partial")]
        self.assertEqual(leftovers, [os.path.basename(running)])

    def test_download_removes_a_killed_downloads_part(self) -> None:
        directory = temp_dir(self)
        stale = self.killed_writer(directory, "photo.jpg", ".part")
        other = os.path.join(directory, ".notes.txt.part")  # not ours: kept
        with open(other, "wb") as f:
            f.write(b"x")
        sink = _Sink(os.path.join(directory, "video.mp4"), None)  # type: ignore[arg-type]
        self.addCleanup(sink.discard)
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(other))
        self.assertTrue(os.path.exists(sink.temp))

    def test_only_dead_writers_files_go(self) -> None:
        directory = temp_dir(self)
        fd, mine = tempfiles.create(directory, "x", ".partial")
        os.close(fd)
        self.assertEqual(tempfiles.clean_stale(directory, ".partial"), [])
        self.assertTrue(os.path.exists(mine))
