"""Writing files and folders so that a crash never leaves half of one: every writer in ``mimo_lib`` uses these.

The rule is always the same: write the whole thing under a temporary name in the same folder, flush it to
disk (``fsync``), then rename it over the final name in one step (``os.replace``), and ``fsync`` the folder
so the rename itself survives a power cut. A reader then sees the old content or the new, never a mix.

Folders cannot be renamed over a non-empty folder, so :func:`replace_folder` swaps the two in one step
where the system can (Linux ``renameat2(RENAME_EXCHANGE)``), and otherwise moves the old folder aside
first: a crash in that short window leaves the old folder under a ``.trash-`` name, which
:func:`recover_folder` puts back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

TEMPORARY_PREFIXES = (".tmp-", ".trash-")


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are durable enough for us
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, then move the finished file onto ``path`` atomically."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        write(temporary)
        fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 1) -> Path:
    """Replace ``path`` with ``data`` as JSON (floats written with ``repr``, so they round-trip) atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def atomic_save_tensors(path: str | Path, tensors: Mapping[str, Any], metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically (contiguous CPU copies of the tensors)."""
    from safetensors.torch import save_file

    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda p: save_file(cpu, str(p), metadata=metadata))


def remove_tree(path: str | Path) -> None:
    """Delete a folder: first rename it to a dot-name, so a half-deleted folder never looks like a real one."""
    path = Path(path)
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{os.urandom(4).hex()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:  # glibc older than 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0  # e.g. EINVAL on a file system without the flag: fall back


def replace_folder(temporary: str | Path, final: str | Path) -> Path:
    """Put the complete folder ``temporary`` at ``final``, replacing an older folder there; at every instant
    ``final`` holds the old folder or the new one (see the module docstring for systems without an exchange)."""
    temporary, final = Path(temporary), Path(final)
    if not final.exists():
        os.replace(temporary, final)
    elif _exchange(temporary, final):
        shutil.rmtree(temporary, ignore_errors=True)  # now holds the old folder
    else:
        aside = final.with_name(f".trash-{final.name}-{os.getpid()}-{os.urandom(4).hex()}")
        os.replace(final, aside)
        os.replace(temporary, final)
        shutil.rmtree(aside, ignore_errors=True)
    fsync_dir(final.parent)
    return final


def recover_folder(final: str | Path) -> bool:
    """If ``final`` is missing but an interrupted :func:`replace_folder` left it aside, put it back."""
    final = Path(final)
    if final.exists():
        return False
    aside = sorted(final.parent.glob(f".trash-{final.name}-*"))
    if not aside:
        return False
    os.replace(aside[-1], final)
    return True


def copy_folder_atomically(source: str | Path, final: str | Path) -> Path:
    """Copy ``source`` to ``final`` (replacing it) so that ``final`` is never missing or half-copied."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        shutil.copytree(source, temporary, dirs_exist_ok=True)
        for file in temporary.rglob("*"):
            if file.is_file():
                fsync_file(file)
        fsync_dir(temporary)
        return replace_folder(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
