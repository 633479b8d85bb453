"""One training per workdir: an exclusive lock on `<workdir>/.lock`, released by the OS.

The lock is `fcntl.flock` on an open file, so it belongs to the process holding the file open:
a crash, `kill -9` or a lost host releases it with the process, and no stale lock file ever has to
be deleted by hand (the file stays; only the lock matters). The file holds the pid of its
holder, for the message a second training gets. Readers of a workdir (`restore_for_inference`,
the report, `experiments/visualize.py`) take no lock: they open checkpoints read-only.
"""

from __future__ import annotations

import fcntl
import os
import socket
from typing import IO


class WorkdirLockedError(RuntimeError):
  """Another process holds the workdir's lock (is training in it)."""


def lock_path(workdir: str) -> str:
  return os.path.join(workdir, ".lock")


def lock_workdir(workdir: str) -> IO:
  """Takes the exclusive lock of `workdir` (created if needed) for this process.

  Returns:
    The open lock file: the lock lasts while it is open (close it, or let the process end).

  Raises:
    WorkdirLockedError: another process holds it; the message names its pid and host.
  """
  os.makedirs(workdir, exist_ok=True)
  file = open(lock_path(workdir), "a+")
  try:
    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    file.seek(0)
    holder = file.read().strip() or "an unknown process"
    file.close()
    raise WorkdirLockedError(
        f"workdir {workdir!r} is in use by {holder} (lock {lock_path(workdir)}): wait for that "
        f"training to end or stop it, or use another --workdir") from None
  file.seek(0)
  file.truncate()
  file.write(f"pid {os.getpid()} on {socket.gethostname()}")
  file.flush()
  return file
