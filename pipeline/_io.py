"""Atomic file writes (the one place in the pipeline that renames temporary files), and the
lock that keeps two commands out of one build folder.

A file the pipeline writes either exists whole or not at all: it is written under a temporary
name in the same folder (``.NAME.PID.tmp``) and renamed over the target, which POSIX makes
atomic. A process killed mid-write leaves only its temporary file, which ``remove_orphans``
deletes on the next run. ``swap_folder`` does the same for a whole folder (``publish --to``).
``build_lock`` holds BUILD/.lock (an advisory ``flock``) while encode, index or publish uses a
build. Reads and writes only the files it is given, and the lock file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path(target: Path) -> Path:
    """The temporary name this process writes ``target`` under (hidden, same folder)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` in one rename."""
    target = Path(target)
    tmp = temp_path(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when the write failed


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def swap_folder(staging: Path, target: Path) -> None:
    """Put the fully written folder ``staging`` in place of ``target`` (two renames; a crash
    between them leaves the old tree at ``.TARGET.old-PID-N``, whole, and no ``target``, which
    ``swap_leftovers`` puts back). The old tree is deleted under another name,
    ``.TARGET.trash-PID-N``: a tree named ``old`` is always whole, one named ``trash`` never."""
    staging, target = Path(staging), Path(target)

    def aside(kind: str, n: int) -> Path:
        return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{n}")

    n = 0  # names no earlier run left: never the old tree of another run
    while aside("old", n).exists() or aside("trash", n).exists():
        n += 1
    old, trash = aside("old", n), aside("trash", n)
    had_target = target.exists()
    try:
        if had_target:
            os.replace(target, old)
        os.replace(staging, target)
    except BaseException:  # (a failed rename, or Ctrl-C): the old tree goes back at once
        if had_target and old.exists() and not target.exists():
            os.replace(old, target)
        raise
    if had_target:
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)


def swap_leftovers(target: Path) -> list[str]:
    """Deal with what killed ``swap_folder`` callers left beside ``target``; return notes.

    A staging tree (``.TARGET.staging-PID``) of a process that is gone is removed: it is an
    unfinished new tree, whose kept files are links to the old tree's; so is a tree it was
    deleting (``.TARGET.trash-PID-N``). An old tree (``.TARGET.old-PID-N``, whole) is put back
    as ``target`` when ``target`` is missing (a run died between its two renames; of several,
    the one moved aside last, and one with its manifest before one without, which older
    versions left half deleted) and is otherwise left alone, with a note: it may hold the only
    copy of files, and its process id may belong to another program now. On Windows, where no
    process can be asked whether it is alive without ending it, nothing is removed.
    """
    from imagesearchtr.manifest import moved_aside

    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(staging|trash)-(\d+)(-\d+)?")
    for item in list(target.parent.iterdir()) if target.parent.is_dir() else ():
        match = pattern.fullmatch(item.name)
        if match and (int(match[2]) == os.getpid() or not _alive(int(match[2]))):
            shutil.rmtree(item, ignore_errors=True)
    notes = []
    for item in moved_aside(target):
        if not target.exists():
            os.replace(item, target)
        else:
            notes.append(
                f"{item} is an older tree of {target.name} that an interrupted publish left; "
                "check it for files of yours, then delete it"
            )
    return notes


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would end the process there
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # (no process can have a huge id)
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(folder: Path, name_glob: str = "*") -> None:
    """Delete the temporary files killed runs left for targets matching ``name_glob``."""
    for orphan in Path(folder).glob(f".{name_glob}.*.tmp"):
        orphan.unlink(missing_ok=True)


LOCK_FILE = ".lock"


@contextmanager
def build_lock(
    folder: Path, command: str, create: bool = False, shared: bool = False
) -> Iterator[None]:
    """Hold ``folder``'s lock while ``command`` runs; raise RuntimeError if another run holds it.
    ``shared``: a reader's lock (publish), which other readers may hold too, but not a writer
    (encode, index). ``create``: make the folder first (else a folder that is not there is not
    locked: the command names it).

    Two encodes on one build each wrote shards the other's plan deleted, and reported
    success; two index runs removed each other's temporary files. The lock is ``flock``'s:
    the system drops it when the process ends, however it ends, so a killed run leaves none
    behind. Without fcntl (Windows) there is no lock.
    """
    folder = Path(folder)
    # The folders this run makes, innermost first: a run refused before it wrote anything (no
    # usable image, a model that does not load) removes them again.
    made = [p for p in (folder, *folder.parents) if not p.exists()] if create else []
    if made:
        folder.mkdir(parents=True)
    yield from _locked(folder, command, shared, made)


@contextmanager
def swap_lock(target: Path, command: str) -> Iterator[None]:
    """Hold the lock of a folder that ``swap_folder`` replaces whole: ``.NAME.lock`` beside it
    (one inside would be swapped away with the folder). Two publishes to one folder put back
    each other's old trees and linked each other's files; now the second is refused. A folder
    whose parent is not there yet is not locked (nothing of it exists to mix). A run that fails
    (a refused folder, say) removes the lock file it made: the parent is left as it was."""
    target = Path(target)
    if sys.platform == "win32" or not target.parent.is_dir():
        yield
        return
    path = target.with_name(f".{target.name}.lock")
    made = not path.exists()
    with open(path, "a+", encoding="utf-8") as handle:
        locked = _flock(handle, False, target)
        if locked and os.fstat(handle.fileno()).st_nlink == 0:
            # A failed run removed the lock file between this run's open and its lock.
            raise RuntimeError(f"{target} was in use by another run as this one started; run again")
        if locked:
            _name_holder(handle, command)
        try:
            yield
        except BaseException:
            if made:  # (held, or a file system without locks: no other run relies on it)
                path.unlink(missing_ok=True)
            raise


def _locked(folder: Path, command: str, shared: bool, made: list[Path]) -> Iterator[None]:
    """``build_lock``'s lock itself, on a folder that exists (or none, on Windows)."""
    if sys.platform == "win32" or not folder.is_dir():
        try:
            yield
        except BaseException:
            _remove_unused(made)
            raise
        return
    path = folder / LOCK_FILE
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(open(path, "a+", encoding="utf-8"))
        except OSError as err:
            if not shared:  # a writer could not write the build either: say so now
                raise RuntimeError(
                    f"{folder}: cannot open {LOCK_FILE} ({err}); is the folder writable?"
                ) from None
            # A reader of a read-only build (a mounted artifact): share its lock, if it has one.
            handle = stack.enter_context(open(path, encoding="utf-8")) if path.is_file() else None
        locked = handle is not None and _flock(handle, shared, folder)
        if locked and os.fstat(handle.fileno()).st_nlink == 0:
            # A refused first run removed the folder (and this lock file) between this run's
            # open and its lock: the lock guards nothing now.
            raise RuntimeError(
                f"{folder} was removed by another run as this one started; run again"
            )
        if locked and handle.writable():
            _name_holder(handle, command)
        try:
            yield
        except BaseException:
            _remove_unused(made)  # while the lock is held: no other run is in the folder
            raise


def _name_holder(handle, command: str) -> None:
    """Write who holds the lock into its file: a refused run names it (``_flock``)."""
    handle.seek(0)
    handle.truncate()
    handle.write(f"`{command}` (pid {os.getpid()})")
    handle.flush()


def _remove_unused(made: list[Path]) -> None:
    """Remove the folders a run made (innermost first) while they hold nothing but its lock
    file; stops at the first that holds anything else."""
    with contextlib.suppress(OSError):
        if made and [p.name for p in made[0].iterdir()] in ([], [LOCK_FILE]):
            (made[0] / LOCK_FILE).unlink(missing_ok=True)
        for path in made:
            path.rmdir()  # refused for a folder that is not empty


def _flock(handle, shared: bool, folder: Path) -> bool:
    """Lock ``handle`` without waiting; False where the file system has no locks (some NFS
    mounts: the run goes on without one); RuntimeError naming the holder when it is taken."""
    import fcntl

    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        raise RuntimeError(
            f"{folder} is in use by {holder}; wait for it to finish (two runs on one folder "
            "would mix their files), or give another folder"
        ) from None
    except OSError:
        return False
    return True
