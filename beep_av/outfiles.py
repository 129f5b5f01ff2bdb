"""Every file Beep writes at a path it was given: the recording, the WAV, `--frames`
files, the report (and later `explain -o`, `render -o`). An adapter: it touches the
file system only.

Beep's real show runs as root, so a path such as /tmp/talk.jsonl must not become a way
for another user to make root overwrite a file. The kernel guards this with
fs.protected_symlinks and fs.protected_regular, which some images and containers turn
off; this module applies the same rules itself, whatever the sysctls say:

- the path is walked one component at a time from a folder fd, each component opened
  with O_NOFOLLOW, and every symlink read and checked here instead of by the kernel: in
  a *shared* folder (sticky and world-writable, as /tmp) a symlink is followed only when
  it belongs to the caller or to the folder's owner (protected_symlinks=1);
- in a shared folder an existing file of another user is never written or replaced
  (protected_regular); elsewhere an existing regular file is never opened for writing
  either: the new content goes to a fresh temporary name in the same folder (O_EXCL)
  and is renamed over it;
- a new file is created exclusively (O_CREAT|O_EXCL|O_NOFOLLOW).

A refusal is BadInput: one line naming the path and the reason (exit 2). `check_*`
decide without creating anything, so the commands call them before any stage exists;
`open_*` decide again at the moment they write (the path may have changed since).

Under sudo (euid 0 with SUDO_UID set), the files and folders made here are handed to
SUDO_UID/SUDO_GID, so the user can move or delete them without sudo. The stage's own
files (swapfile, cache file, state) are not made here and stay root's."""

from __future__ import annotations

import errno
import os
import re
import stat
from typing import IO, NamedTuple

from beep_av.errors import BadInput

MAX_LINKS = 40  # as the kernel's MAXSYMLINKS
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    """A path Beep will not write; the message names the path and why."""


# ---------------------------------------------------------------- who is writing


def sudo_owner() -> tuple[int, int] | None:
    """(uid, gid) to hand new files to: the user who ran sudo, when Beep is root and
    SUDO_UID names someone else; None otherwise."""
    if os.geteuid() != 0:
        return None
    uid = os.environ.get("SUDO_UID", "")
    if not uid.isdigit() or int(uid) == 0:
        return None
    gid = os.environ.get("SUDO_GID", "")
    return int(uid), int(gid) if gid.isdigit() else -1


def hand_over(fd: int) -> None:
    """Give the file or folder open at `fd` to the sudo user (see sudo_owner). A file
    system without owners (vfat) keeps its own: nothing to hand over there."""
    owner = sudo_owner()
    if owner is not None:
        try:
            os.fchown(fd, *owner)
        except OSError:
            pass


def _shared(st: os.stat_result) -> bool:
    """A folder anyone may create in, where only owners may remove (sticky, o+w)."""
    return bool(st.st_mode & stat.S_ISVTX) and bool(st.st_mode & stat.S_IWOTH)


def _trusted(owner: int, folder: os.stat_result) -> bool:
    """May an entry of `owner` in `folder` be followed or replaced? (the kernel's rule)"""
    return not _shared(folder) or owner in (os.geteuid(), folder.st_uid)


# ---------------------------------------------------------------- walking a path


class Spot(NamedTuple):
    """Where a path ends: an open folder, the last name in it, and how to show both."""

    dirfd: int
    name: str
    shown: str  # the folder as walked, for messages


def _join(shown: str, name: str) -> str:
    if shown in ("", "."):
        return name
    return shown.rstrip("/") + "/" + name if shown != "/" else "/" + name


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _walk(path: str, *, make_dirs: bool = False, want_dir: bool = False) -> Spot | int:
    """Walk `path` from / or the working folder, following symlinks only where the rule
    allows. Returns the Spot of the last component (a file to write), or with `want_dir`
    an fd of the folder the whole path names (made, with its parents, when `make_dirs`:
    each made folder is handed to the sudo user). Raises Refused."""
    if not path:
        raise Refused("the path is empty")
    if not want_dir and path.endswith("/"):
        raise Refused("is a directory")
    start = "/" if path.startswith("/") else "."
    fd = os.open(start, DIR_FLAGS)
    return _walk_from(fd, start, _parts(path), path, make_dirs, want_dir)


def _walk_from(
    fd: int, shown: str, todo: list[str], path: str, make_dirs: bool, want_dir: bool
) -> Spot | int:
    """The loop of _walk, from the folder open at `fd`, which it owns: the result
    holds it (or the folder reached from it), or it is closed. Raises Refused."""
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            last = not todo
            if name == "..":
                nfd = os.open("..", DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd, shown = nfd, _join(shown, "..")
                continue
            here = os.fstat(fd)
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if last and not want_dir:
                    return Spot(fd, name, shown)
                if not make_dirs:
                    raise Refused(f"directory {_join(shown, name)} does not exist") from None
                _make_dir(fd, name, shown)
                todo.insert(0, name)
                continue
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise Refused(f"too many levels of symbolic links at {_join(shown, name)}")
                if not _trusted(st.st_uid, here):
                    raise Refused(
                        f"refused: {_join(shown, name)} is a symlink of uid {st.st_uid} in the shared "
                        f"folder {shown} (sticky, world-writable): Beep follows a link there "
                        "only when it is yours or the folder owner's"
                    )
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    nfd = os.open("/", DIR_FLAGS)
                    os.close(fd)
                    fd, shown = nfd, "/"
                todo = _parts(target) + todo
                continue
            if last and not want_dir:
                return Spot(fd, name, shown)
            if not stat.S_ISDIR(st.st_mode):
                raise Refused(f"{_join(shown, name)} is not a directory")
            try:
                nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Refused(f"{_join(shown, name)} changed while Beep opened it") from None
                raise Refused(f"cannot open {_join(shown, name)} ({e.strerror})") from None
            os.close(fd)
            fd, shown = nfd, _join(shown, name)
    except OSError as e:
        os.close(fd)
        raise Refused(f"cannot reach it ({e.strerror or e})") from None
    except Refused:
        os.close(fd)
        raise
    if not want_dir:
        os.close(fd)
        raise Refused("is a directory")
    return fd


def _make_dir(fd: int, name: str, shown: str) -> None:
    """mkdir `name` in the folder at `fd` and hand it to the sudo user. Raises Refused."""
    try:
        os.mkdir(name, 0o777, dir_fd=fd)
    except FileExistsError:
        return  # made meanwhile: the walk looks at it again
    except OSError as e:
        raise Refused(f"cannot make the folder {_join(shown, name)} ({e.strerror})") from None
    made = os.open(name, DIR_FLAGS, dir_fd=fd)
    try:
        hand_over(made)
    finally:
        os.close(made)


def _in(dirfd: int, shown: str, name: str) -> Spot:
    """The Spot of `name` in the folder open at `dirfd` (left open), a link there
    followed under the same rules as in _walk."""
    got = _walk_from(os.dup(dirfd), shown, [name], name, False, False)
    assert isinstance(got, Spot)
    return got


def _spot(path: str) -> Spot:
    """The folder fd and last name of a file path (see _walk)."""
    got = _walk(path)
    assert isinstance(got, Spot)
    return got


# ---------------------------------------------------------------- deciding


NEW, REPLACE = "new", "replace"


def _decide(spot: Spot) -> tuple[str, os.stat_result | None]:
    """What writing at `spot` would do: NEW (no such entry) or REPLACE (an existing
    regular file, replaced through a temporary name). Anything else is refused: a
    device or FIFO is never written as root (a planted FIFO would hang the show).
    Raises Refused."""
    folder = os.fstat(spot.dirfd)
    full = _join(spot.shown, spot.name)
    try:
        st = os.stat(spot.name, dir_fd=spot.dirfd, follow_symlinks=False)
    except FileNotFoundError:
        if not os.access(".", os.W_OK | os.X_OK, dir_fd=spot.dirfd):
            raise Refused(f"the folder {spot.shown} is not writable") from None
        return NEW, None
    if stat.S_ISDIR(st.st_mode):
        raise Refused("is a directory")
    if stat.S_ISLNK(st.st_mode):  # appeared since the walk
        raise Refused(f"{full} changed while Beep opened it")
    if not _trusted(st.st_uid, folder):
        raise Refused(
            f"refused: {full} belongs to uid {st.st_uid} in the shared folder {spot.shown} "
            "(sticky, world-writable): Beep never writes another user's file there"
        )
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"{full} is not a regular file")
    if not os.access(".", os.W_OK | os.X_OK, dir_fd=spot.dirfd):
        raise Refused(f"the folder {spot.shown} is not writable (Beep replaces a file there)")
    return REPLACE, st


def _refuse(label: str, why: Refused) -> BadInput:
    text = str(why)
    return BadInput(
        f"{label}: {text}" if text.startswith("refused") else f"{label}: cannot write ({text})"
    )


def check_file(path: str, label: str) -> None:
    """Raise BadInput (one line: `label`, the path, the reason) unless Beep may write a
    file at `path`. Creates nothing."""
    try:
        spot = _spot(path)
        try:
            _decide(spot)
        finally:
            os.close(spot.dirfd)
    except Refused as why:
        raise _refuse(label, why) from None


def check_dir(path: str, label: str, names: re.Pattern[str] | None = None) -> None:
    """Raise BadInput unless Beep may make (or use) the folder `path` and write in it
    the names `names` matches (entries already there under those names are checked as
    files Beep would write). Creates nothing."""
    try:
        try:
            fd = _walk(path, want_dir=True)
        except Refused as why:
            if not str(why).endswith("does not exist"):
                raise
            return  # made at the show's start, with its parents (checked then)
        assert isinstance(fd, int)
        try:
            if not os.access(".", os.W_OK | os.X_OK, dir_fd=fd):
                raise Refused("the folder is not writable")
            if names is not None:
                for entry in os.listdir(fd):
                    if names.match(entry):
                        spot = _in(fd, path, entry)
                        try:
                            _decide(spot)
                        finally:
                            os.close(spot.dirfd)
        finally:
            os.close(fd)
    except Refused as why:
        raise _refuse(label, why) from None


def make_dir(path: str, label: str) -> int:
    """Open the folder `path`, making it and its missing parents (handed to the sudo
    user). Returns an fd of the folder (the caller closes it). Raises BadInput."""
    try:
        fd = _walk(path, make_dirs=True, want_dir=True)
    except Refused as why:
        raise _refuse(label, why) from None
    assert isinstance(fd, int)
    return fd


# ---------------------------------------------------------------- writing


class OutFile:
    """A file being written under the rules above. `f` is the open file object.

    `at_close=False` (a stream: a recording, a WAV, a frame): the file takes its name at
    once, so a crashed show still leaves what it wrote; closing `f` is all that is left
    to do (or close()). `at_close=True` (a picture, a
    video): it is written under a temporary name and takes its name in `commit()`;
    `abort()` (or leaving the `with` block on an error) removes it, so a failed write
    leaves nothing, and an old file of that name stays as it was."""

    def __init__(self, spot: Spot, mode: str, at_close: bool, label: str, **open_kw) -> None:
        self._spot = spot
        self._label = label
        self._tmp: str | None = None  # the temporary name, until it takes the real one
        self._replace = False
        self.path = _join(spot.shown, spot.name)
        try:
            kind, st = _decide(spot)
            if kind == NEW and not at_close:
                fd = self._create(spot.name, 0o666)
            else:
                self._replace = kind == REPLACE
                perm = stat.S_IMODE(st.st_mode) & 0o777 if st is not None else 0o666
                fd = self._temp(perm)
        except Refused as why:
            os.close(spot.dirfd)
            raise _refuse(label, why) from None
        except OSError as e:
            os.close(spot.dirfd)
            raise BadInput(f"{label}: cannot write ({e.strerror or e})") from None
        self.f: IO = os.fdopen(fd, mode, **open_kw)
        if not at_close:  # a stream: its name now, and the folder is no longer needed
            try:
                if self._tmp is not None:
                    self._rename()
            except (Refused, OSError) as e:
                self.abort()
                raise BadInput(f"{label}: {getattr(e, 'strerror', None) or e}") from None
            self._close_dir()

    def _create(self, name: str, perm: int) -> int:
        try:
            fd = os.open(name, NEW_FLAGS, perm, dir_fd=self._spot.dirfd)
        except FileExistsError:
            raise Refused(
                f"{_join(self._spot.shown, name)} appeared while Beep opened it"
            ) from None
        if perm != 0o666:  # a replaced file's mode, not the umask's
            os.fchmod(fd, perm)
        hand_over(fd)
        return fd

    def _temp(self, perm: int) -> int:
        for _ in range(8):
            name = (
                f".{self._spot.name}.{os.urandom(4).hex()}.part"  # no `secrets`: it loads OpenSSL
            )
            try:
                fd = self._create(name, perm)
            except Refused:
                continue
            self._tmp = name
            return fd
        raise Refused("no free temporary name in its folder")

    def _rename(self) -> None:
        d, tmp, name = self._spot.dirfd, self._tmp, self._spot.name
        assert tmp is not None
        if self._replace:
            _decide(self._spot)  # still a file Beep may replace (Refused otherwise)
            os.rename(tmp, name, src_dir_fd=d, dst_dir_fd=d)
        else:
            # a new name, taken exclusively: link(2) fails if it exists now
            os.link(tmp, name, src_dir_fd=d, dst_dir_fd=d, follow_symlinks=False)
            os.unlink(tmp, dir_fd=d)
        self._tmp = None

    def commit(self) -> None:
        """Close the file and give it its name (at_close). Raises BadInput."""
        try:
            if not self.f.closed:
                self.f.close()
            if self._tmp is not None:
                self._rename()
        except Refused as why:
            self.abort()
            raise _refuse(self._label, why) from None
        except OSError as e:
            self.abort()
            raise BadInput(f"{self._label}: cannot write ({e.strerror or e})") from None
        finally:
            self._close_dir()

    def abort(self) -> None:
        """Close and remove a file that has not taken its name yet."""
        try:
            if not self.f.closed:
                self.f.close()
        except OSError:
            pass
        if self._tmp is not None and self._spot.dirfd >= 0:
            try:
                os.unlink(self._tmp, dir_fd=self._spot.dirfd)
            except OSError:
                pass
            self._tmp = None
        self._close_dir()

    def close(self) -> None:
        """Close a stream (its name was taken at open); same as commit otherwise."""
        self.commit()

    def _close_dir(self) -> None:
        if self._spot.dirfd >= 0:
            os.close(self._spot.dirfd)
            self._spot = self._spot._replace(dirfd=-1)

    def __enter__(self) -> OutFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def open_file(
    path: str, label: str, mode: str = "wb", *, at_close: bool = False, **open_kw
) -> OutFile:
    """Open a file Beep writes at `path` (see OutFile; `open_kw` go to os.fdopen).
    `label` starts every message ("--record talk.jsonl"). Raises BadInput: nothing is
    written then."""
    try:
        spot = _spot(path)
    except Refused as why:
        raise _refuse(label, why) from None
    return OutFile(spot, mode, at_close, label, **open_kw)


def open_in(dirfd: int, shown: str, name: str, label: str, mode: str = "wb") -> OutFile:
    """Open the file `name` in the folder open at `dirfd` (from make_dir; it stays
    open: OutFile closes its own duplicate)."""
    try:
        spot = _in(dirfd, shown, name)
    except Refused as why:
        raise _refuse(label, why) from None
    return OutFile(spot, mode, False, label)
