"""
Temporary files beside their destination that a killed process does not
leave behind forever.

A backup or a download is written under a temporary name next to its final
path, then renamed or linked into place. A process killed with SIGKILL
never removes that file. The temporary name carries the writer's process
id (C{.<name>.kez<pid>-<random><suffix>}), so the next run in the same
directory can tell a dead writer's leftover from a live writer's work in
progress, and removes only the former.
"""

from __future__ import annotations

import os
import re
import tempfile


def create(directory: str, name: str, suffix: str) -> tuple[int, str]:
    """
    A new temporary file for C{name} in C{directory}: its open descriptor
    and path (as L{tempfile.mkstemp}).
    """
    return tempfile.mkstemp(dir=directory, prefix=f".{name}.kez{os.getpid()}-", suffix=suffix)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def clean_stale(directory: str, suffix: str) -> list[str]:
    """
    Remove the temporary files ending in C{suffix} in C{directory} whose
    writer is no longer running; the paths removed. Files that are not
    ours, or cannot be removed, are left alone.
    """
    pattern = re.compile(r"\..+\.kez(\d+)-[A-Za-z0-9_]+" + re.escape(suffix))
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for entry in names:
        match = pattern.fullmatch(entry)
        if match is None or _alive(int(match.group(1))):
            continue
        path = os.path.join(directory, entry)
        try:
            os.unlink(path)
        except OSError:
            continue
        removed.append(path)
    return removed
