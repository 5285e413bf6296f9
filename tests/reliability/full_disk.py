"""`python full_disk.py PATTERN N ARGS...`: the vgf CLI with ARGS, on a disk that fills up at the Nth write.

Counting the `os.write` calls on files whose path matches the regular expression PATTERN (vgf writes every file it
replaces through `os.write`, in `vgf.files`), the Nth writes half its bytes and returns a short count, as a nearly full
disk does, and every matching write after it fails with ENOSPC: the disk stays full until the process ends.
"""

from __future__ import annotations

import errno
import os
import re
import sys


def fill_disk_at(pattern: str, nth: int) -> None:
    real_write, calls = os.write, 0

    def write(fd: int, data) -> int:
        nonlocal calls
        if not re.search(pattern, os.readlink(f"/proc/self/fd/{fd}")):
            return real_write(fd, data)
        calls += 1
        if calls < nth:
            return real_write(fd, data)
        if calls == nth and len(data) > 1:
            return real_write(fd, memoryview(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    os.write = write


if __name__ == "__main__":
    fill_disk_at(sys.argv[1], int(sys.argv[2]))
    from vgf.cli import main

    sys.exit(main(sys.argv[3:]))
