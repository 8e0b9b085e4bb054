"""Copy a file, sharing its blocks where the file system can (a reflink).

On btrfs, XFS (reflink=1), bcachefs and other copy-on-write file systems ``FICLONE`` makes
the copy in O(1) and costs no space until one side is written; elsewhere the kernel copies
(``copy_file_range``/``sendfile``), and plain reads and writes are the last resort. Either way
the result is an independent file: writing it never changes the source.
"""

from __future__ import annotations

import os
import shutil
import sys

#: ioctl number of FICLONE (linux/fs.h: _IOW(0x94, 9, int))
FICLONE = 0x40049409


def clone_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> bool:
    """Write ``dst`` (created or truncated) with the content of ``src``; True when the two
    share their blocks (a reflink), False when the bytes were copied."""
    if not sys.platform.startswith("linux"):
        shutil.copyfile(src, dst)
        return False
    with open(src, "rb") as fsrc, open(dst, "wb") as fdst:
        try:
            import fcntl

            fcntl.ioctl(fdst.fileno(), FICLONE, fsrc.fileno())
            return True
        except OSError:  # not a copy-on-write file system, another device, or an old kernel
            pass
        _kernel_copy(fsrc, fdst)
    return False


def _kernel_copy(fsrc, fdst) -> None:
    """Copy in the kernel (no bytes through Python); fall back to a buffered copy."""
    size = os.fstat(fsrc.fileno()).st_size
    offset = 0
    try:
        while offset < size:
            sent = os.copy_file_range(fsrc.fileno(), fdst.fileno(), size - offset)
            if sent == 0:
                break
            offset += sent
    except OSError:
        pass
    fsrc.seek(offset)
    fdst.seek(offset)
    shutil.copyfileobj(fsrc, fdst)  # the rest (nothing, unless the file grew or the kernel refused)
