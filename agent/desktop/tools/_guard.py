"""What a confined file tool may touch, checked on opened descriptors, never by string prefix.

A ``Guard`` lives for one call, in its worker thread, over the call's ``Confinement``
(``core/confine.py``). Under ``unconfined`` (``full_access``) it opens paths as ``open`` would,
symlinks and all. Otherwise:

- a path is looked up below the outermost root that names it (reads may also use ``read_only``),
  the root is opened once and everything below it is opened *beneath* that descriptor
  (``_fs.open_beneath``: openat2 or an ``O_NOFOLLOW`` walk), so a link or ``..`` cannot lead out
  and a rename after the check cannot redirect the operation, which then works on the descriptor;
- the directory a file is opened in is checked by identity (``st_dev``, ``st_ino``) together with
  each of its ancestors up to ``/`` (found with ``..`` from the descriptor itself): a protected folder
  reached through a symlink, a bind mount or a renamed parent is still the protected folder;
- a file is refused when it *is* a protected file, and a file with several hard links is read only
  when none of its links is in a protected folder (the protected folders are scanned once per call);
- writes go below ``roots`` only, never below ``write_protected`` (nor create one of those paths
  that does not exist yet), never into a ``.git`` folder (a directory named ``.git`` in its parent,
  by identity, so a link to it counts) and never name ``.git``. Writes replace a file by renaming a
  new one over it, so a hard link elsewhere keeps its old contents: no hard-link rule is needed there.

Nothing here checks names a second time after the descriptors are open; tools must operate on the
descriptors a Guard returns.

Windows has no folder descriptors: there a folder is handled by its path (``_at``), which is fine for
``full_access`` and cannot confine anything, so a confined Guard refuses to start there
(``confinement_refusal``): the call fails closed with a clear error instead of running unchecked.
"""

from __future__ import annotations

import errno
import functools
import os
import posixpath
import stat
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ....core import fileio, roots
from ....core.confine import Confinement
from ....core.desktop import ToolError
from . import _at, _fs

Ident = tuple[int, int]
MAX_DEPTH: Final = 4096  # ancestors followed up to "/" (PATH_MAX / 2 would be one-letter folders)
MAX_PROTECTED_SCAN: Final = 100_000  # entries looked at to find hard links into protected folders
FOLD_CASE = sys.platform in ("darwin", "win32")  # their usual file systems (APFS, NTFS) ignore case
# Going up needs only search permission with O_PATH (Linux); elsewhere the folder must be readable.
if sys.platform == "linux":
    _UP_FLAGS: Final = os.O_PATH | _fs.O_DIRECTORY | _fs.O_CLOEXEC
else:
    _UP_FLAGS: Final = _fs.DIR_FLAGS


def fold(name: str) -> str:
    """``name`` as a file system that ignores case compares it (``FOLD_CASE``): ".SSH" and ".ſsh" are ".ssh"
    there (as far as Unicode case folding goes), so a missing login path is refused under any spelling;
    elsewhere ``name`` itself."""
    return unicodedata.normalize("NFC", name).casefold() if FOLD_CASE else name


def ident(info: os.stat_result) -> Ident:
    return (info.st_dev, info.st_ino)


CONFINEMENT_NEEDS_POSIX: Final = ("file confinement needs Linux or macOS; only full access works here yet "
                                   "(the user can grant it with `hermes-relay access URL --preset full_access`)")


def confinement_refusal(confinement: Confinement, platform: str = sys.platform) -> str | None:
    """Why a file tool under ``confinement`` must not run on ``platform``, or None.

    The checks here stand on folder descriptors (``dir_fd``, ``O_NOFOLLOW`` walks, openat2) that
    Windows does not have; without them a link or a rename could lead a confined call out of its
    roots, so a confined call fails closed there instead of running unchecked."""
    if confinement.unconfined or platform != "win32":
        return None
    return CONFINEMENT_NEEDS_POSIX


@dataclass
class Slot:
    """Where a write lands: a name in an opened, checked directory (``info``: its lstat, or None)."""

    dirfd: _at.Dir
    name: str
    info: os.stat_result | None
    path: Path


def outside(path: Path, c: Confinement, *, write: bool) -> ToolError:
    roots = ", ".join(str(r) for r in c.roots) or "none"
    if write and any(_lexically_below(path, r) for r in c.read_only):
        return ToolError(f"path {path} is in a read-only folder: relay hosts may read it, not write it "
                         f"(writable roots: {roots}); the user can add one with `hermes-relay access URL --root DIR`")
    return ToolError(f"path {path} is outside the folders this relay host may use (roots: {roots}); "
                     "the user can add one with `hermes-relay access URL --root DIR`")


def protected(path: Path | str) -> ToolError:
    return ToolError(f"{path} is hermes-relay's own state; no relay host may touch it below full access")


def persistence(path: Path | str) -> ToolError:
    return ToolError(f"{path} is a login or start-up path (writing it runs code later); "
                     "no relay host may write it below full access")


def in_git(path: Path | str) -> ToolError:
    return ToolError(f"{path} is inside a .git folder (its hooks and config run code): relay hosts may read it, "
                     "not write it, below full access")


def escapes(path: Path | str, root: Path) -> ToolError:
    return ToolError(f"{path} leads out of {root} through a symbolic link or '..'; relay hosts may follow "
                     "links only while they stay inside their folders")


def _lexically_below(path: Path, root: Path) -> bool:
    """``path`` is ``root`` or below it, by name (``root in path.parents``, without building each parent)."""
    return _parts_below(path.parts, root.parts)


def _parts_below(p: tuple[str, ...], r: tuple[str, ...]) -> bool:
    if len(r) > len(p):
        return False
    if sys.platform == "win32":  # Windows paths compare without case, as PureWindowsPath does
        return [x.lower() for x in p[: len(r)]] == [x.lower() for x in r]
    return p[: len(r)] == r


def _parts(form: str) -> tuple[str, ...]:
    """``Path(form).parts`` of an absolute, normalised path (abspath, realpath), without making the Path."""
    if sys.platform == "win32" or not form.startswith("/") or form.startswith("//"):
        return Path(form).parts  # drives, and POSIX's own "//" root
    return ("/", *form[1:].split("/")) if len(form) > 1 else ("/",)


def _absolute_forms(paths: tuple[Path, ...]) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...], tuple[str, ...]]:
    """(parts of ``os.path.abspath``, ``os.path.abspath``, the name) of each of ``paths``, remembered per
    tuple of absolute names (a confinement's paths are the same objects call after call); a relative name
    depends on the working directory and is worked out each time (never in a confinement)."""
    parts, forms, names, absolute = _absolute_names(paths)
    return (parts, forms, names) if absolute else _absolute_names.__wrapped__(paths)[:3]


@functools.lru_cache(maxsize=256)
def _absolute_names(paths: tuple[Path, ...]
                    ) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...], tuple[str, ...], bool]:
    names = tuple(os.fspath(p) for p in paths)
    forms = tuple(os.path.abspath(p) for p in names)
    return tuple(_parts(f) for f in forms), forms, names, all(os.path.isabs(p) for p in names)


def _interleaved(absolute: tuple[str, ...], resolved: list[str]) -> tuple[str, ...]:
    return tuple(f for pair in zip(absolute, resolved, strict=True) for f in pair)


@functools.lru_cache(maxsize=256)
def _outermost_first(forms: tuple[str, ...]) -> tuple[tuple[tuple[str, ...], str, int], ...]:
    """``forms`` (each root's name as written, then resolved: absolute and normalised) each once, with
    its parts and, for a resolution that is no root's name as written, the root it resolves (else -1),
    the fewest parts first (ties keep their order)."""
    written = set(forms[0::2])
    owners = {f: -1 if f in written else i // 2 for i, f in reversed(list(enumerate(forms)))}
    return tuple(sorted(((_parts(f), f, owners[f]) for f in dict.fromkeys(forms)), key=lambda f: len(f[0])))


def _identities(paths: Iterable[Path]) -> tuple[set[Ident], list[tuple[Ident, tuple[str, ...]]]]:
    """Identities of the paths that exist (the link and its target), and for each one that does not,
    its deepest existing ancestor with the names still missing below it. (Plain strings: this runs
    on every call's first check, once per path.)"""
    ids: set[Ident] = set()
    pending: list[tuple[Ident, tuple[str, ...]]] = []
    for p in paths:
        path = os.fspath(p)
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError:
            info = None
        if info is not None:
            ids.add(ident(info))
            if stat.S_ISLNK(info.st_mode):
                try:
                    ids.add(ident(os.stat(path)))
                except OSError:
                    pass
            continue
        rest: list[str] = []
        cur = path
        while True:
            parent, name = os.path.split(cur)
            if parent == cur or not name:  # the top, or a path ending in a separator
                if parent == cur:
                    break
                cur = parent
                continue
            rest.insert(0, name)
            cur = parent
            try:
                pending.append((ident(os.stat(cur)), tuple(rest)))
                break
            except OSError:
                continue
    return ids, pending


class Guard:
    """The checks and opens of one call. Use as a context manager: it closes what it opened."""

    def __init__(self, confinement: Confinement) -> None:
        reason = confinement_refusal(confinement)
        if reason is None and _at.PATHS and not confinement.unconfined:
            reason = CONFINEMENT_NEEDS_POSIX  # folder paths stand in for descriptors: nothing to confine with
        if reason:
            raise ToolError(reason)
        self.c = confinement
        self.confined = not confinement.unconfined
        self._fds: set[int] = set()
        self._p_rules: tuple[set[Ident], list[tuple[Ident, tuple[str, ...]]]] | None = None
        self._w_rules: tuple[set[Ident], list[tuple[Ident, tuple[str, ...]]]] | None = None
        self._protected_files: set[Ident] | None = None
        self._scan_overflow = False
        self._roots: dict[str, tuple[Path, int, Ident, bool]] = {}  # root -> (it, fd, identity, a file root)

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    def keep(self, fd: int) -> int:
        """Close ``fd`` with the guard."""
        self._fds.add(fd)
        return fd

    def keep_dir(self, d: _at.Dir) -> _at.Dir:
        """Close the folder ``d`` with the guard (a path needs no closing)."""
        if isinstance(d, int):
            self._fds.add(d)
        return d

    def release(self, fd: _at.Dir) -> None:
        """Close ``fd`` now (walks: a big tree must not hold a descriptor per folder)."""
        if isinstance(fd, int) and fd in self._fds:
            self._fds.discard(fd)
            os.close(fd)

    # -- the rules -----------------------------------------------------------------------------

    def _protected(self) -> tuple[set[Ident], list[tuple[Ident, tuple[str, ...]]]]:
        """The protected paths' identities (and missing ones' anchors), looked up at this call's first check."""
        if self._p_rules is None:
            self._p_rules = _identities(self.c.protected)
        return self._p_rules

    def _write_protected(self) -> tuple[set[Ident], list[tuple[Ident, tuple[str, ...]]]]:
        """The same for the persistence paths: only a write is checked against them (a read never
        looks them up: ~50 paths, most of a confined read's cost before)."""
        if self._w_rules is None:
            self._w_rules = _identities(self.c.write_protected)
        return self._w_rules

    def created(self) -> None:
        """A folder was made: paths that did not exist may now (their missing names are looked up again)."""
        self._p_rules = self._w_rules = None

    def check_chain(self, fd: _at.Dir, path: Path | str, *, write: bool, root: Ident | None = None) -> None:
        """Refuse ``fd`` (a directory) when it or an ancestor is protected (or, for writes, a
        persistence path or a .git folder), or when it is no longer below ``root``."""
        if not self.confined:
            return
        p_ids = self._protected()[0]
        w_ids = self._write_protected()[0] if write else set()
        seen_root = root is None
        chain, complete = _ancestry(_at.fd(fd), git=write)
        for here, git in chain:
            seen_root = seen_root or here == root
            if here in p_ids:
                raise protected(path)
            if here in w_ids:
                raise persistence(path)
            if git:
                raise in_git(path)
        if not seen_root:
            if not complete:
                raise ToolError(f"the folders above {path} cannot be searched, so it cannot be checked; nothing was done")
            raise ToolError(f"{path} was moved out of its folder while it was opened; nothing was done")

    def check_create(self, d: _at.Dir, names: list[str], path: Path | str) -> None:
        """Refuse making ``names`` (a chain of new entries) in ``d`` when that makes a protected or
        persistence path, names .git, or replaces one of those."""
        if not self.confined:
            return
        dirfd = _at.fd(d)
        want = tuple(map(fold, names))
        if ".git" in want:
            raise in_git(path)
        here = ident(os.fstat(dirfd))
        for anchor, rest in self._protected()[1]:
            if anchor == here and want[: len(rest)] == tuple(map(fold, rest)):
                raise protected(path)
        for anchor, rest in self._write_protected()[1]:
            if anchor == here and want[: len(rest)] == tuple(map(fold, rest)):
                raise persistence(path)
        try:
            info = os.stat(names[0], dir_fd=dirfd, follow_symlinks=False)
        except OSError:
            return
        self.check_file(info, path, write=True)

    def check_file(self, info: os.stat_result, path: Path | str, *, write: bool) -> None:
        if not self.confined:
            return
        if ident(info) in self._protected()[0]:
            raise protected(path)
        if write and ident(info) in self._write_protected()[0]:
            raise persistence(path)
        if not write and stat.S_ISREG(info.st_mode) and info.st_nlink > 1 and self._hard_linked(info):
            raise protected(path)

    def allowed(self, info: os.stat_result, *, write: bool = False) -> bool:
        """For walks: may this entry (an lstat or fstat) be looked at (or written)?"""
        try:
            self.check_file(info, "", write=write)
        except ToolError:
            return False
        return True

    def _hard_linked(self, info: os.stat_result) -> bool:
        """Is ``info`` one of the several names of a file that also lives in a protected folder?"""
        if self._protected_files is None:
            self._protected_files = set()
            seen = 0
            for top in self.c.protected:
                for here, _dirs, files in os.walk(top):
                    for name in files:
                        seen += 1
                        if seen > MAX_PROTECTED_SCAN:
                            self._scan_overflow = True
                            return True
                        try:
                            st = os.lstat(os.path.join(here, name))
                        except OSError:
                            continue
                        if st.st_nlink > 1:
                            self._protected_files.add(ident(st))
        return self._scan_overflow or ident(info) in self._protected_files

    # -- opening -------------------------------------------------------------------------------

    def _root(self, path: Path, *, write: bool) -> tuple[Path, int, Ident, str]:
        target = path.parts
        for parts in _absolute_forms(self.c.protected)[0]:  # the named paths, early and clearly
            if _parts_below(target, parts):  # (identity checks follow anyway)
                raise protected(path)
        found = self._outermost(target, write=write)
        if found is None:
            raise outside(path, self.c, write=write)
        parts, form = found
        if form not in self._roots:
            root = Path(form)
            try:
                fd, is_file = self.keep(os.open(form, _fs.DIR_FLAGS)), False
            except NotADirectoryError:
                # A root that is a file: a folder holding protected state (the home directory holding
                # ~/.hermes) is split into its entries, files included. It reaches that file alone,
                # opened by name in its folder (path == root here: nothing is below a file).
                fd, is_file = self.keep(os.open(root.parent, _fs.DIR_FLAGS)), True
            except OSError as exc:
                raise ToolError(f"the folder {root} cannot be opened: {exc.strerror or exc}") from exc
            self._roots[form] = (root, fd, ident(os.fstat(fd)), is_file)
        root, fd, rid, is_file = self._roots[form]
        if is_file:
            return root.parent, fd, rid, root.name
        return root, fd, rid, "/".join(target[len(parts):])  # (path is below root by name)

    def _outermost(self, target: tuple[str, ...], *, write: bool) -> tuple[tuple[str, ...], str] | None:
        """(parts, form) of the outermost root that names ``target``: links may move anywhere inside it.

        Each root counts as written and as resolved. A name as written is resolved by the kernel when the
        root is opened; a resolution is worked out again per call as links may have moved, first from those
        walked within ``roots.RESOLVE_TTL`` (no look at the disk), the one chosen then checked
        (``roots.realpath``: the path still names the folder it named). When that check fails or no root
        names ``target``, every root is resolved again (``roots.realpaths``: a stat or two each). So a
        root that was re-pointed is followed at once, except that a root re-pointed to become the outer
        one of two that name a path can be passed over for ``RESOLVE_TTL``: the inner one (also allowed)
        is used, and a link in it to the outer one is refused until then."""
        _, absolute, names = _absolute_forms(self.c.roots if write else self.c.roots + self.c.read_only)
        known = roots.remembered(names)
        if known is not None:
            for parts, form, owner in _outermost_first(_interleaved(absolute, known)):
                if _parts_below(target, parts):
                    if owner < 0 or roots.realpath(names[owner]) == form:
                        return parts, form
                    break  # a root moved: resolve them all again
        for parts, form, _ in _outermost_first(_interleaved(absolute, roots.realpaths(names))):
            if _parts_below(target, parts):
                return parts, form
        return None

    def _beneath(self, rootfd: int, root: Path, rel: str, flags: int, path: Path, *, write: bool) -> int:
        try:
            return _fs.open_beneath(rootfd, rel, flags)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise escapes(path, root) from None
            if exc.errno == errno.ELOOP:
                raise ToolError(f"{path}: too many symbolic links, or a link where a file was expected") from None
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                self._missing(rootfd, rel, path, write=write)
            raise

    def _missing(self, rootfd: int, rel: str, path: Path, *, write: bool) -> None:
        """``rel`` is missing: refuse as protected when the folder it is missing from is protected,
        so "does not exist" never answers a question about the agent's own state."""
        head = rel
        while head not in ("", "."):
            head = posixpath.dirname(head)
            try:
                fd = _fs.open_beneath(rootfd, head, _fs.DIR_FLAGS)
            except OSError:
                continue
            try:
                self.check_chain(fd, path, write=write)
            finally:
                os.close(fd)
            return

    def locate(self, path: Path, *, write: bool) -> Slot:
        """The directory ``path``'s last name is in (opened, checked) and that name, with a final
        symlink followed (inside the root only). Raises FileNotFoundError when the folder is missing."""
        if not self.confined:
            real = fileio.write_target(path) if write else path
            folder = self.keep_dir(_at.open_dir(real.parent))
            return Slot(folder, real.name, _at.lstat_or_none(folder, real.name), real)
        root, rootfd, rid, rel = self._root(path, write=write)
        for _ in range(_fs.MAX_LINKS):
            head, name = posixpath.split(rel)
            if name in ("", ".", ".."):
                dirfd = self.keep(self._beneath(rootfd, root, rel, _fs.DIR_FLAGS, path, write=write))
                self.check_chain(dirfd, path, write=write, root=rid)
                return Slot(dirfd, ".", os.fstat(dirfd), path)
            dirfd = self.keep(self._beneath(rootfd, root, head, _fs.DIR_FLAGS, path, write=write))
            info = _lstat(dirfd, name)
            if info is not None and stat.S_ISLNK(info.st_mode):
                target = os.readlink(name, dir_fd=dirfd)
                if target.startswith("/"):
                    raise escapes(path, root)
                rel = posixpath.join(head, target)
                continue
            self.check_chain(dirfd, path, write=write, root=rid)
            if info is not None:
                self.check_file(info, path, write=write)
            if write:
                self.check_create(dirfd, [name], path)
            return Slot(dirfd, name, info, path)
        raise ToolError(f"{path}: too many symbolic links")

    def open_file(self, path: Path) -> tuple[int, os.stat_result]:
        """A regular file opened for reading (never blocks: FIFOs, devices and sockets are refused)."""
        if not self.confined:
            try:
                info = os.stat(path)
            except FileNotFoundError:
                raise ToolError(f"no such file: {path}") from None
            if not stat.S_ISREG(info.st_mode):
                raise ToolError(f"not a regular file: {path}")
            return self.open_entry(None, str(path), path, follow=True)
        try:
            slot = self.locate(path, write=False)
        except FileNotFoundError:
            raise ToolError(f"no such file: {path}") from None
        if slot.info is None:
            raise ToolError(f"no such file: {path}")
        if not stat.S_ISREG(slot.info.st_mode):
            raise ToolError(f"not a regular file: {path}")
        return self.open_entry(slot.dirfd, slot.name, path, follow=not self.confined)

    def open_here(self, path: Path) -> tuple[int, os.stat_result]:
        """``open_file`` for a read answered on the event loop (files.py), under a confinement whose file
        systems are local (``_mounts``; the desktop service checks that in a worker thread). Nothing here may
        reach another file system or take long: the path is opened below its root without crossing a mount
        (``_fs.open_here``), and a symbolic link at its end, a file with several links (their scan), a
        non-regular file and every refusal or failure are ``_fs.Slow``: the worker thread's answer is given."""
        if not self.confined:
            raise _fs.Slow(str(path))
        try:
            _root, rootfd, rid, rel = self._root(path, write=False)
            head, name = posixpath.split(rel)
            if name in ("", ".", ".."):
                raise _fs.Slow(str(path))
            dirfd = self.keep(_fs.open_here(rootfd, head, _fs.DIR_FLAGS))
            fd = self.keep(_fs.open_here(dirfd, name, _fs.READ_FLAGS | _fs.O_NOFOLLOW))
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
                raise _fs.Slow(str(path))
            self.check_chain(dirfd, path, write=False, root=rid)
            self.check_file(info, path, write=False)
        except (ToolError, OSError) as exc:
            raise _fs.Slow(str(path)) from exc
        return fd, info

    def open_entry(self, dirfd: _at.Dir | None, name: str, path: Path | str, *, follow: bool = False
                   ) -> tuple[int, os.stat_result]:
        fd = self.keep(_at.open_in(dirfd, name, _fs.READ_FLAGS | (0 if follow else _fs.O_NOFOLLOW)))
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"not a regular file: {path}")
        self.check_file(info, path, write=False)
        return fd, info

    def open_dir(self, path: Path, *, write: bool = False) -> _at.Dir:
        """A directory opened and checked (its whole ancestry) for reading or for writing below it."""
        if not self.confined:
            return self.keep_dir(_at.open_dir(path))
        root, rootfd, rid, rel = self._root(path, write=write)
        fd = self.keep(self._beneath(rootfd, root, rel, _fs.DIR_FLAGS, path, write=write))
        self.check_chain(fd, path, write=write, root=rid)
        return fd

    def make_dirs(self, path: Path) -> _at.Dir:
        """``path`` as a directory for writing, made (with its missing parents) when absent. Every
        missing name is checked before the first folder is made."""
        if not self.confined:
            os.makedirs(path, exist_ok=True)
            return self.open_dir(path, write=True)
        missing: list[str] = []
        cur = path
        while True:
            try:
                fd = _at.fd(self.open_dir(cur, write=True))
                break
            except FileNotFoundError:
                if cur == cur.parent:
                    raise
                missing.insert(0, cur.name)
                cur = cur.parent
        if missing:
            self.check_create(fd, missing, path)
        for name in missing:
            self.mkdir(fd, name)
            fd = self.keep(os.open(name, _fs.DIR_FLAGS | _fs.O_NOFOLLOW, dir_fd=fd))
            self.check_file(os.fstat(fd), path, write=True)
        return fd

    def mkdir(self, d: _at.Dir, name: str) -> None:
        _at.mkdir(d, name)
        self.created()


def _lstat(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _ancestry(fd: int, *, git: bool) -> tuple[list[tuple[Ident, bool]], bool]:
    """(identity, is a folder named .git) for the directory ``fd`` and each ancestor up to ``/``,
    and whether ``/`` was reached (an ancestor we may not search ends the walk early)."""
    out: list[tuple[Ident, bool]] = []
    here = os.fstat(fd)
    cur = fd
    try:
        for _ in range(MAX_DEPTH):
            try:
                parent = os.open("..", _UP_FLAGS, dir_fd=cur)
            except OSError:
                out.append((ident(here), False))
                return out, False
            up = os.fstat(parent)
            top = ident(up) == ident(here)  # "/" (or a chroot's top) is its own parent
            is_git = False
            if git and not top:
                try:
                    is_git = ident(os.stat(".git", dir_fd=parent, follow_symlinks=False)) == ident(here)
                except OSError:
                    pass
            out.append((ident(here), is_git))
            if cur != fd:
                os.close(cur)
            cur, here = parent, up
            if top:
                return out, True
    finally:
        if cur != fd:
            os.close(cur)
    return out, False
