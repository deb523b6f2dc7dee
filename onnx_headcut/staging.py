"""Write a command's outputs without ever destroying a file of the user's.

* :func:`check_outputs` checks a command's whole output set before any work: a member that is an
  input (or an input's external data, same path or same file through a hard link), a symbolic
  link, a folder or special file, or that already exists without ``force``, is an
  :class:`~onnx_headcut.errors.OutputError` naming it; so is a missing or read-only folder.
  :func:`check_output_path` is that check for ``strip``'s set (:func:`strip_outputs`).
* :class:`Staging` makes a missing output folder (and removes it again if nothing is committed),
  writes every output file into a private folder next to the destination and
  moves them into place only when :meth:`Staging.commit` is called, as one unit: under an
  exclusive lock per output name (``.<name>.headcut-lock`` beside it), after checking the set
  again, and undone if a move fails. An error, a full disk or an interrupt leaves nothing behind,
  and the input is never opened for writing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the lock is an O_EXCL file instead of a flock
    fcntl = None  # type: ignore[assignment]  # no fcntl module on Windows; checked for None before use

from .errors import OutputError
from .io import dependencies


def _collision(target: Path, protected: Mapping[Path, str]) -> str | None:
    """What ``target`` is among ``protected`` (same resolved path, or the same file through a link)."""
    real = os.path.realpath(target)
    for p, what in protected.items():
        if os.path.realpath(p) == real:
            return what
        try:
            if os.path.samefile(target, p):
                return what
        except OSError:
            pass
    return None


def check_outputs(targets: Iterable[str | os.PathLike], protected: Mapping[Path, str] | Iterable = (),
                  force: bool = False) -> tuple[Path, ...]:
    """Check, before any work, that every file of a command's output set may be written.

    ``protected`` are the files the inputs depend on (``{path: what it is}``, see
    :func:`dependencies`, or plain paths): no target may be one of them, even with ``force``.
    No target may be a symbolic link (headcut does not write through links), a folder or a special
    file; an existing target is an error unless ``force``. Each target's folder must exist and be
    writable. Raises :class:`OutputError` naming the first offending file; returns the targets.
    """
    paths = tuple(Path(t) for t in targets)
    if not isinstance(protected, Mapping):
        protected = {Path(p): "an input file" for p in protected}
    folders = []
    for t in paths:
        folder = _existing_ancestor(t.parent.resolve())  # a missing output folder is made by Staging
        if folder not in folders:
            folders.append(folder)
    for t in paths:
        _check_target(t, protected, force)
    for folder in folders:
        try:  # os.access says yes to root even on read-only mounts: really try. TemporaryFile is
            # nameless on Linux (O_TMPFILE), so an interrupt here can leave nothing behind
            with tempfile.TemporaryFile(prefix=".headcut-probe-", dir=folder):
                pass
        except OSError:
            raise OutputError(f"{folder}: the output folder is not writable") from None
    return paths


def _existing_ancestor(folder: Path) -> Path:
    """``folder``, or its nearest existing ancestor when it is still to be made; refuses a path
    through a file."""
    at = folder
    while not at.exists():
        at = at.parent
    if not at.is_dir():
        raise OutputError(f"{at}: is not a folder, so the output folder {folder} cannot be made")
    return at


def _check_target(t: Path, protected: Mapping[Path, str], force: bool) -> None:
    if _foreign(lock_path(t)):
        raise OutputError(f"{lock_path(t)}: exists and is not a headcut lock file; headcut needs that name to lock "
                          f"{t.name} while writing it (rename the file)")
    what = _collision(t, protected)
    if what is not None:
        raise OutputError(f"{t}: the output is {what}; choose another output path")
    if t.is_symlink():
        raise OutputError(f"{t}: is a symbolic link; headcut does not write through links")
    if t.is_dir():
        raise OutputError(f"{t}: is a folder; the output must be a file name")
    if t.exists() and not t.is_file():
        raise OutputError(f"{t}: is not a regular file; headcut replaces regular files only")
    if t.exists() and not force:
        raise OutputError(f"{t}: already exists (use --force to overwrite)")


def strip_outputs(dst: str | os.PathLike) -> tuple[Path, Path, Path]:
    """What ``strip -o dst`` may write: ``dst``, ``dst.data`` (a model too big for protobuf, see
    :func:`save`) and ``<dst stem>.head.json``. The whole set is checked whatever the model's size."""
    d = Path(dst)
    return d, d.with_name(d.name + ".data"), d.with_name(d.stem + ".head.json")


def check_output_path(src: str | os.PathLike, dst: str | os.PathLike, force: bool = False,
                      protected: Mapping[Path, str] | None = None) -> Path:
    """Return ``dst`` as a Path after checking ``strip``'s output set can be written without touching ``src``.

    The set is :func:`strip_outputs`; ``src`` and its external data files (``protected``, by default
    :func:`dependencies` of ``src``) are never written.
    """
    d = Path(dst)
    if d.suffix.lower() != ".onnx":
        raise OutputError(f"{d}: the output must end in .onnx")
    check_outputs(strip_outputs(d), dependencies(src) if protected is None else protected, force)
    return d


#: errors that mean the disk (or the quota, or the file size limit) is exhausted
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


#: the staging folders (and output folders made for them) of the Stagings alive in this process: an
#: interrupt can land between ``mkdir`` and the ``with`` block that removes them (a signal is raised
#: between any two bytecodes), so the CLI's interrupt handler removes what is left (:func:`remove_live`)
_LIVE: dict[Path, list[Path]] = {}


def remove_live() -> None:
    """Remove every staging folder (and the output folders made for it) still alive: after an interrupt."""
    for tmp, made in list(_LIVE.items()):
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        _LIVE.pop(tmp, None)


class Staging:
    """A private folder beside the destination; files move into place on :meth:`commit` only.

    ``targets`` is the command's whole output set (default: just ``destination``; all in one
    folder), ``protected`` and ``force`` as for :func:`check_outputs`, which :meth:`commit` runs
    again under the lock. Leaving the block removes the private folder; a full disk while writing
    a staged file becomes an :class:`OutputError` naming the file.

    >>> with Staging(Path("out/raw.onnx")) as st:     # doctest: +SKIP
    ...     save(model, st.path("raw.onnx"))
    ...     st.commit()                                # nothing is visible in out/ before this
    """

    def __init__(self, destination: Path, *, targets: Iterable[str | os.PathLike] | None = None,
                 protected: Mapping[Path, str] | Iterable = (), force: bool = False):
        self.destination = Path(destination)
        self.folder = self.destination.parent.resolve()  # the link itself, never its target's folder
        self.targets = tuple(Path(t) for t in targets) if targets is not None else (self.destination,)
        if any(t.parent.resolve() != self.folder for t in self.targets):
            raise ValueError("Staging: every target must be in the destination's folder")
        self.protected, self.force = protected, force
        self._writing: str | None = None
        self._made: list[Path] = []  # output folders made here, removed again unless the set is committed
        self._committed = False
        # registered before it exists: whenever an interrupt lands, remove_live() finds it
        self.tmp = self.folder / f".headcut-{secrets.token_hex(6)}"
        _LIVE[self.tmp] = self._made
        try:
            missing = [self.folder, *self.folder.parents]
            for folder in reversed(missing[:next(i for i, f in enumerate(missing) if f.exists())]):
                folder.mkdir()
                self._made.append(folder)
            self.tmp.mkdir(mode=0o700)
        except OSError as e:
            _LIVE.pop(self.tmp, None)
            self._remove_made()
            raise OutputError(f"{self.folder}: cannot write there ({e.strerror})") from None

    def path(self, name: str) -> Path:
        self._writing = name
        return self.tmp / name

    def commit(self) -> list[Path]:
        """Move the staged targets into place as one unit; return them.

        Under the lock of every target: check the set again (nothing appeared meanwhile unless
        ``force``), then move each file (a hard link that cannot clobber without ``force``,
        ``os.replace`` with it); if one move fails, the ones done are undone.
        """
        staged = [t.name for t in self.targets if (self.tmp / t.name).is_file()]
        with locked(self.targets, self.destination):
            check_outputs(self.targets, self.protected, self.force)
            backup = self.tmp / ".previous"
            backup.mkdir()
            done: list[tuple[Path, Path | None]] = []
            try:
                for name in staged:
                    final = self.folder / name
                    old = None
                    if self.force and final.exists():
                        with contextlib.suppress(OSError):  # no hard links here: no undo for this file
                            os.link(final, backup / name)
                            old = backup / name
                    _place(self.tmp / name, final, self.force)
                    done.append((final, old))
            except BaseException as e:  # undo the moves done: the set appears whole or not at all
                for final, old in reversed(done):
                    with contextlib.suppress(OSError):
                        os.replace(old, final) if old is not None else os.unlink(final)
                if isinstance(e, OSError):
                    raise OutputError(f"{self.folder / name}: cannot be moved into place ({e.strerror}); "
                                      "nothing written") from None
                raise
        self._committed = True
        return sorted(self.folder / n for n in staged)

    def _remove_made(self) -> None:
        for folder in reversed(self._made):
            with contextlib.suppress(OSError):  # only ever empty folders headcut made
                folder.rmdir()

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, typ, exc, tb) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if not self._committed:
            self._remove_made()
        _LIVE.pop(self.tmp, None)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            name = Path(exc.filename).name if exc.filename and str(exc.filename).startswith(str(self.tmp)) \
                else self._writing or self.destination.name
            raise OutputError(f"{self.folder / name}: {exc.strerror} while writing it; nothing written") from None


def _place(src: Path, final: Path, force: bool) -> None:
    """Move ``src`` to ``final``; without ``force`` never replace a file that appeared meanwhile."""
    if not force:
        try:
            os.link(src, final)  # atomic: fails if ``final`` exists
        except FileExistsError:
            raise OutputError(f"{final}: already exists (use --force to overwrite)") from None
        except OSError:  # a file system without hard links: checked just before, under the lock
            if os.path.lexists(final):
                raise OutputError(f"{final}: already exists (use --force to overwrite)") from None
        else:
            os.unlink(src)
            return
    os.replace(src, final)


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file that guards ``target`` while headcut moves it into place."""
    t = Path(target)
    return t.parent / f".{t.name}.headcut-lock"


@contextlib.contextmanager
def locked(targets: Iterable[str | os.PathLike], what: str | os.PathLike):
    """Hold an exclusive lock on every target's name, or raise :class:`OutputError` at once.

    A second headcut writing any of the same names gets "another headcut is writing <what>". The
    lock is a ``flock`` on :func:`lock_path` (released by the kernel if the process dies). headcut
    only ever removes a lock file it created itself, and never writes into or removes a file of
    that name it did not make: one that is not an (empty or pid-only) lock file is refused.
    """
    held: list[tuple[Path, int, bool]] = []
    try:
        for t in sorted({Path(t).parent.resolve() / Path(t).name for t in targets}):
            held.append(_acquire(lock_path(t), what))
        yield
    finally:
        for path, fd, created in reversed(held):
            if created and _same_file(fd, path):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    mine = os.fstat(fd)
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def _foreign(path: Path) -> bool:
    """True when ``path`` exists and is not a lock file headcut could have left (empty, or a pid)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size > 32:
        return True
    with open(path, "rb") as f:
        return re.fullmatch(rb"\d*\n?", f.read(33)) is None


def _acquire(path: Path, what) -> tuple[Path, int, bool]:
    """(path, fd, created) of the lock held on ``path``; ``created``: this process made the file."""
    busy = OutputError(f"another headcut is writing {what}; try again when it has finished")
    base = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        if _foreign(path):
            raise OutputError(f"{path}: exists and is not a headcut lock file; headcut needs that name to lock "
                              f"{what} while writing it (rename the file)")
        try:
            fd, created = os.open(path, base | os.O_CREAT | os.O_EXCL, 0o600), True
        except FileExistsError:
            if fcntl is None:
                raise busy from None
            try:  # a lock file left by a process that died, or one another headcut holds: flock it as it is
                fd, created = os.open(path, base), False
            except FileNotFoundError:
                continue  # its holder removed it meanwhile: try again
            except OSError as e:
                raise OutputError(f"{path}: cannot open the lock file ({e.strerror})") from None
        except OSError as e:
            raise OutputError(f"{path.parent}: the output folder is not writable ({e.strerror})") from None
        if fcntl is None:
            return path, fd, created
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise busy from None
        except OSError:  # a file system without flock (ENOLCK, some FUSE mounts): the file is all
            return path, fd, created
        if _same_file(fd, path):
            if created:
                with contextlib.suppress(OSError):  # who holds it, for a curious user; not needed
                    os.write(fd, f"{os.getpid()}\n".encode())
            return path, fd, created
        os.close(fd)  # the previous holder removed the file between our open and flock: take the new one
