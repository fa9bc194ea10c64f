"""Small file helpers: atomic writes, staged output folders, and the checks every output gets before any work.

* A crash never leaves half a file: files are written beside their target and renamed over it; folders are built in
  a staging folder and moved into place (`staged_dir`), and a failure removes the staging folder.
* Files and folders get the permissions the umask allows (``0666 & ~umask``, ``0777 & ~umask``), like any
  program's output, not the private 0600 / 0700 of `tempfile`.
* An output is never an input: `check_output` refuses an output path that is, contains or sits inside one of the
  command's inputs, and an output that cannot be written (read-only, no permission, a file where a folder is
  expected), before any work starts.
* An existing output folder (or a symlink to one) is written into, not replaced: its contents are swapped, so a
  symlink keeps pointing where the user put it and the folder keeps its owner and permissions.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import UserError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
)

_UMASK_LOCK = threading.Lock()


class OutputError(UserError):
    """An output path that would overwrite an input or cannot be written (or an input file that is damaged)."""


class OutputExistsError(OutputError, FileExistsError):
    """An output that holds something already (a `FileExistsError` too, for callers that catch that)."""


# ------------------------------------------------------------------------------------------ permissions
def current_umask() -> int:
    """The process umask (read by setting and restoring it: the only portable way)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    return 0o777 & ~current_umask()


def apply_umask(root: str | Path) -> None:
    """Give `root` and everything under it the umask's permissions (what `open`/`mkdir` would have given);
    libraries that write through private temporary files (0600) leave their files readable by nobody else."""
    root = Path(root)
    fmode, dmode = file_mode(), dir_mode()
    if root.is_file():
        os.chmod(root, fmode | (root.stat().st_mode & 0o111 & ~current_umask()))
        return
    os.chmod(root, dmode)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), dmode)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, fmode | (os.stat(path).st_mode & 0o111 & ~current_umask()))


# ------------------------------------------------------------------------------------------ safetensors
def stable_safetensors_header(path: str | Path) -> None:
    """Rewrite a .safetensors file's header with its metadata keys sorted, so equal tensors give equal bytes.

    safetensors keeps the tensors in a fixed order (dtype, then name) but writes the ``__metadata__`` map in the
    iteration order of a Rust HashMap, which differs from process to process: the same weights saved twice gave
    different files. Same keys in another order serialise to the same length, so the header is rewritten in place.
    """
    path = Path(path)
    with open(path, "r+b") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return
        size = int.from_bytes(head, "little")
        raw = handle.read(size)
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=dict)
        except (UnicodeDecodeError, ValueError):
            return  # not a safetensors header: leave the file alone
        metadata = header.get("__metadata__")
        if not isinstance(metadata, dict) or len(metadata) < 2:
            return
        header = {"__metadata__": dict(sorted(metadata.items())),
                  **{k: v for k, v in header.items() if k != "__metadata__"}}
        new = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(new) > size:
            return  # would not fit in place (never seen: same content, other order)
        handle.seek(8)
        handle.write(new + b" " * (size - len(new)))  # safetensors pads its header with spaces too


def check_safetensors(path: str | Path, what: str = "weights file") -> None:
    """Refuse a .safetensors file that is truncated or not safetensors at all, by its header and size alone (no
    tensor is read): a `UserError` naming the file, before any work that needs it."""
    path = Path(path)
    size = path.stat().st_size
    fix = "it is truncated or not a safetensors file; copy or write it again"
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length <= 0 or 8 + length > size or length > 100_000_000:
            raise OutputError(f"{what} {path} has no valid safetensors header ({size} bytes); {fix}")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError):
            raise OutputError(f"{what} {path} has no valid safetensors header; {fix}") from None
    if 8 + length + end > size:
        raise OutputError(f"{what} {path} is truncated: its header needs {8 + length + end} bytes, the file has "
                          f"{size}; {fix}")


def _stabilise(root: Path) -> None:
    for file in ([root] if root.is_file() else root.rglob("*.safetensors")):
        if file.suffix == ".safetensors" and file.is_file() and not file.is_symlink():
            stable_safetensors_header(file)


# ------------------------------------------------------------------------------------------ files
def _temp_beside(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, file_mode())
    return fd, tmp


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to a temporary file in the same folder, fsync, then rename over `path`."""
    path = _through_link(Path(path))
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """JSON in a stable form: the mapping order the code builds (deterministic), two-space indent, newline."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on error delete it."""
    path = _through_link(Path(path))
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())  # a library may have replaced the file with its own (0600) one
        if path.suffix == ".safetensors":
            stable_safetensors_header(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _through_link(path: Path) -> Path:
    """A symlinked output is written where it points (the link stays). A device or a pipe is refused: the rename
    that makes a write atomic would replace it."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.exists() and not (target.is_file() or target.is_dir()):
        raise OutputError(f"{path} is not a regular file (a device or a pipe); give a file path")
    return target


# ------------------------------------------------------------------------------------------ checks
def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def overlap(out: str | Path, source: str | Path) -> str | None:
    """How `out` collides with the input `source` ("is", "contains", "sits inside"), or None. Symlinks are
    followed, so a link to an input is that input."""
    a, b = _real(out), _real(source)
    if a == b:
        return "is"
    if a in b.parents:
        return "contains"
    if b in a.parents:
        return "sits inside"
    return None


def check_output(out: str | Path, inputs: Iterable[tuple[str, str | Path | None]] = (), *, key: str = "out",
                 folder: bool = True) -> None:
    """Refuse, before any work, an output that would overwrite an input or cannot be written.

    `inputs`: (setting name, path) pairs (None and non-paths, e.g. hub names, are skipped). `folder`: the output
    is a folder (else a file). Nothing is created: writability is probed in the nearest existing folder.
    """
    out = Path(out).expanduser()
    for name, source in inputs:
        if source is None or str(source) == "" or not Path(source).expanduser().exists():
            continue
        relation = overlap(out, source)
        if relation is not None:
            what = {"is": "is", "contains": "contains", "sits inside": "is inside"}[relation]
            raise OutputError(f"{key}={out} {what} the input {name}={source}; writing there would destroy the "
                              f"input: choose another {key} folder" if folder else
                              f"{key}={out} {what} the input {name}={source}; choose another {key} file")
    check_writable(out, key=key, folder=folder)


def check_writable(out: str | Path, *, key: str = "out", folder: bool = True) -> None:
    """`out` (a folder or a file to be written) can be created or written: its nearest existing ancestor is a
    writable folder, and an existing `out` is of the expected kind."""
    out = Path(out).expanduser()
    if out.is_symlink() and not out.exists():
        raise OutputError(f"{key}={out} is a broken symlink (to {os.readlink(out)}); fix the link or choose "
                          f"another {key}")
    if out.exists():
        if folder and not out.is_dir():
            raise OutputError(f"{key}={out} is a file, not a folder; give a folder path")
        if not folder and out.is_dir():
            raise OutputError(f"{key}={out} is a folder; give a file path")
        if not folder and not out.is_file():  # a device or a pipe: an atomic write would replace it
            raise OutputError(f"{key}={out} is not a regular file (a device or a pipe); give a file path")
        probe_in = out if folder else out.parent
    else:
        probe_in = out.parent
        while not probe_in.exists() and probe_in != probe_in.parent:
            probe_in = probe_in.parent
        if not probe_in.is_dir():
            raise OutputError(f"{key}={out}: {probe_in} is a file, not a folder, so nothing can be created under it; "
                              f"choose another {key}")
    _probe(probe_in, out, key)


def _probe(folder: Path, out: Path, key: str) -> None:
    """Create and remove a temporary folder in `folder`: the one test that sees read-only mounts, permissions, ACLs
    and pseudo file systems alike (root passes `os.access` checks where writing still fails)."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".autotinybert-write-test-"))
    except OSError as err:  # named by the folder, not by the probe's random name
        reason = describe_os_error(OSError(err.errno, err.strerror, str(folder)))
        raise OutputError(f"{key}={out} cannot be written: {reason}") from None


def describe_os_error(err: OSError, path: str | Path | None = None) -> str:
    """`err` as one line naming the path and what to do about it."""
    where = err.filename if err.filename is not None else path
    reason = err.strerror or str(err)
    fixes = {
        errno.EACCES: "check its permissions or choose another path",
        errno.EPERM: "check its permissions or choose another path",
        errno.EROFS: "it is on a read-only file system; choose a writable path",
        errno.ENOSPC: "the disk is full; free space or choose another path",
        errno.EDQUOT: "the disk quota is exhausted; free space or choose another path",
        errno.EEXIST: "it exists already; remove it or choose another path",
        errno.ENOENT: "it does not exist (or cannot be created there); check the path",
        errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
        errno.EISDIR: "it is a folder where a file is expected; give a file path",
        errno.ENOTEMPTY: "the folder is not empty; choose another path",
        errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    }
    fix = fixes.get(err.errno or -1, "check the path")
    extra = f" -> {err.filename2}" if getattr(err, "filename2", None) else ""
    return f"{where}{extra}: {reason}; {fix}" if where is not None else f"{reason}; {fix}"


# ------------------------------------------------------------------------------------------ folders
@contextmanager
def staged_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success its contents become `out`'s, on error it is removed.

    Refuses a non-empty `out` unless `overwrite` is set, so nothing a user already has is lost by accident. A new
    `out` is created by one rename; an existing folder (or the folder a symlink `out` points to) is kept and its
    contents are swapped, so the link, the folder's owner and its permissions stay as the user set them.
    """
    out = Path(out)
    target = _through_link(out)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"output path {out} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputExistsError(f"output folder {out} is not empty; choose a new folder or pass overwrite=True "
                                "(overwrite=true on the command line)")
    existing = target.is_dir()
    if existing:
        stage = Path(tempfile.mkdtemp(dir=target, prefix=".staging-"))
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
    try:
        yield stage
        apply_umask(stage)
        _stabilise(stage)
        if existing:
            _swap_contents(target, stage)
        else:
            os.replace(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _swap_contents(target: Path, stage: Path) -> None:
    """Replace `target`'s entries by `stage`'s: the old ones go to a trash folder inside `target` first, and come
    back if a move fails, so a failure leaves `target` as it was (and no trash behind)."""
    trash = Path(tempfile.mkdtemp(dir=target, prefix=".old-"))
    moved_old: list[str] = []
    moved_new: list[str] = []
    try:
        for entry in sorted(target.iterdir()):
            if entry in (stage, trash):
                continue
            os.replace(entry, trash / entry.name)
            moved_old.append(entry.name)
        for entry in sorted(stage.iterdir()):
            os.replace(entry, target / entry.name)
            moved_new.append(entry.name)
    except BaseException:
        for name in moved_new:  # undo: the new entries back to the stage, the old ones back in place
            try:
                os.replace(target / name, stage / name)
            except OSError:
                pass
        for name in moved_old:
            try:
                os.replace(trash / name, target / name)
            except OSError:
                pass
        try:
            trash.rmdir()  # only when everything old is back in place: never delete what could not be restored
        except OSError:
            pass
        raise
    shutil.rmtree(trash, ignore_errors=True)


def clear_folder(folder: str | Path) -> None:
    """Empty `folder` (or the folder a symlink points to), keeping the folder itself, its owner and permissions."""
    target = _through_link(Path(folder))
    for entry in target.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> list[str]:
    """Copy the tokenizer files found in `src` into `dst`; returns the names copied."""
    copied = []
    for name in TOKENIZER_FILES:
        file = Path(src) / name
        if file.is_file():
            shutil.copyfile(file, Path(dst) / name)  # contents only: the copy gets the umask's permissions
            copied.append(name)
    return copied
