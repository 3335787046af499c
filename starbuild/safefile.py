"""Reading files a config names without hanging or exhausting memory, and two small writing helpers.

A FIFO, a device or a socket would block ``open`` or ``read`` forever, and a huge file would be
read whole before any size check. Files are opened without blocking, must be regular files, and
are read only when their size is within the limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


class NotRegularFile(OSError):
    """The path is a FIFO, device, socket or folder, not a regular file."""


class FileTooLarge(OSError):
    """The file is larger than the reader allows."""


def describe_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_regular(path: Path | str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; NotRegularFile or FileTooLarge otherwise."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(f"{os.fspath(path)} is {describe_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise FileTooLarge(f"{os.fspath(path)} is {_size(info.st_size)}; at most {_size(limit)} is read")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:  # grew while being read
                raise FileTooLarge(f"{os.fspath(path)} is larger than {_size(limit)}")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path | str, limit: int, encoding: str = "utf-8") -> str:
    """A regular text file's content (UnicodeDecodeError when it is not in ``encoding``)."""
    return read_regular(path, limit).decode(encoding)


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB" if n >= 1024 else f"{n} bytes"


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: a short write is continued, never lost."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def in_folder(path: Path, make: Callable[[], T]) -> T:
    """``make()`` (which creates ``path``), making ``path``'s folder first only when it is missing:
    one try instead of a mkdir before every file."""
    try:
        return make()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return make()
