"""Atomic writes with temporary names unique to the writing process.

Two processes writing the same target (two `decide` runs on one batch, two reports of one run)
each write their own temporary beside the target and rename it into place: the last rename
wins with whole content, and neither can rename or delete the other's half-written file.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

MARK = ".tmp-"


def temp_beside(path: Path) -> Path:
    """A fresh temporary name in the target's folder (same file system, so rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}{MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def build_dir(final: Path, fill) -> None:
    """`fill(tmp)` writes a directory's content into a fresh temporary directory beside `final`, which then
    replaces `final` whole (replace_dir); a failed fill leaves `final` as it was and no temporary behind."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary directory into place, replacing an older one of the same name."""
    for _ in range(5):
        shutil.rmtree(final, ignore_errors=True)
        try:
            tmp.rename(final)
            return
        except OSError:  # another process put its copy there between our delete and our rename
            continue
    shutil.rmtree(tmp, ignore_errors=True)
    raise OSError(f"{final}: could not be replaced (other writers keep recreating it)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clear_stale(path: Path) -> list[Path]:
    """Remove the temporaries of `path` left by killed writers (their process is gone); a live writer's
    temporary is kept. Returns what was removed."""
    path = Path(path)
    gone = []
    if not path.parent.is_dir():
        return gone
    for p in path.parent.glob(f".{path.name}{MARK}*"):
        try:
            pid = int(p.name[len(f".{path.name}{MARK}"):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            gone.append(p)
    return gone
