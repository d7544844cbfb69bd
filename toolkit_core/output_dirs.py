"""Output folders the toolkit may replace: only those it wrote itself.

Every folder a command assembles is built in a hidden staging folder beside the destination and renamed
into place when complete. Both carry an ownership marker (:data:`OWNER_MARKER`): which tool wrote the
folder and the top-level entries it wrote. ``--overwrite`` replaces a destination only when

- it does not exist, or is an empty folder, or
- it is a real folder (not a link) holding a valid marker, and every top-level entry in it is one the
  marker lists (a user's file added later keeps the folder from being deleted).

Anything else (``/``, a home folder, a user's data folder, a file) is refused with one line naming the
folder and why. Staging folders left by a killed run carry the marker with ``"state": "staging"`` and
their process id; the next run that stages beside them removes them once that process is gone.

A command that writes into its folder as it goes (rather than staging it) applies the same rule through
:func:`prepare_output_dir` / :func:`owned_output_dir` (with ``--resume`` where it can continue), and a
command whose output is one file through :func:`check_output_file`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from toolkit_core.errors import UserInputError

OWNER_MARKER = ".rfo-toolkit-output.json"
"""File name of the ownership marker written into every folder the toolkit assembles."""

_MARKER_MAX_BYTES = 1 << 20


def read_marker(directory: Path) -> dict | None:
    """The ownership marker of ``directory`` or ``None`` when absent, unreadable or not ours."""
    marker = directory / OWNER_MARKER
    try:
        if marker.is_symlink() or not marker.is_file() or marker.stat().st_size > _MARKER_MAX_BYTES:
            return None
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
        return None
    entries = data.get("entries")
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        return None
    return data


def write_marker(directory: Path, tool: str, *, state: str = "complete") -> None:
    """Record that ``tool`` wrote ``directory``, listing its current top-level entries.

    The marker names the writing process (``pid`` and, where the system tells, its start time), so that
    a second command can tell a run still writing the folder from one that was stopped.
    """
    entries = sorted(p.name for p in directory.iterdir() if p.name != OWNER_MARKER)
    payload = {"tool": tool, "state": state, "pid": os.getpid(), "started": _process_started(os.getpid()),
               "entries": entries}
    (directory / OWNER_MARKER).write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _is_protected(target: Path) -> bool:
    """True for the file-system root, the home folder and any folder holding the working directory."""
    resolved = target.resolve()
    protected = {Path(resolved.anchor), Path.home().resolve()}
    cwd = Path.cwd().resolve()
    return resolved in protected or resolved == cwd or resolved in cwd.parents


def why_not_replaceable(target: str | os.PathLike[str]) -> str | None:
    """``None`` when ``target`` may be replaced by the toolkit, else the reason in a few words."""
    path = Path(target)
    if path.is_symlink():
        return "it is a symbolic link"
    if not path.exists():
        return None
    if not path.is_dir():
        return "it is a file, not a folder this tool wrote"
    if _is_protected(path):
        return "it is the root, the home folder or a folder holding the working directory"
    names = {p.name for p in path.iterdir()}
    if not names:
        return None
    marker = read_marker(path)
    if marker is None:
        return "it was not written by this toolkit (no valid ownership marker)"
    foreign = sorted(names - set(marker["entries"]) - {OWNER_MARKER})
    if foreign:
        return f"it holds entries this toolkit did not write: {', '.join(foreign[:5])}"
    return None


def check_output_dir(target: str | os.PathLike[str], *, overwrite: bool, flag: str = "--overwrite") -> None:
    """Raise :class:`UserInputError` unless ``target`` can be written (and replaced if ``overwrite``).

    A missing or empty folder is always fine. A non-empty one needs ``overwrite`` and must pass
    :func:`why_not_replaceable`.
    """
    path = Path(target)
    if path.is_symlink() or path.exists() and (not path.is_dir() or any(path.iterdir())):
        if not overwrite:
            raise UserInputError(f"output exists and is not empty (use {flag} to replace it)", file=path)
        reason = why_not_replaceable(path)
        if reason is not None:
            raise UserInputError(f"refusing to replace: {reason}", file=path)


def require_writable(path: str | os.PathLike[str], *, field: str = "--out", is_dir: bool = True) -> None:
    """Fail fast, before any computation, when ``path`` cannot be written.

    Checks that ``path`` (a folder when ``is_dir``, else a file) is not the wrong kind of entry, that its
    nearest existing ancestor is a folder, and that a file can be created there. Nothing is left behind.

    Raises:
        UserInputError: naming ``path``, ``field`` and the reason.
    """
    target = Path(path)
    if target.exists():
        if is_dir and not target.is_dir():
            raise UserInputError("is a file, expected a folder", file=target, field=field)
        if not is_dir and target.is_dir():
            raise UserInputError("is a folder, expected a file", file=target, field=field)
    probe_dir = target if is_dir and target.is_dir() else target.parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UserInputError(f"not writable: {probe_dir} is a file, not a folder", file=target, field=field)
    try:
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as err:
        raise UserInputError(f"not writable: {err.strerror or err}", file=target, field=field) from err


def claim_output_dir(out: str | os.PathLike[str], tool: str) -> Path:
    """Create ``out`` (or take it up again) for a command that fills and prunes it over several steps.

    The folder must be new, empty, or one that ``tool`` claimed before (a resumed run): a command that
    deletes stale results below its output folder may then only ever delete what it wrote itself. The
    marker's entry list is refreshed by :func:`release_output_dir` when the command finishes.

    Raises:
        UserInputError: ``out`` holds other files, is a link, a file, or cannot be written.
    """
    target = Path(out)
    require_writable(target, field="--out")
    if target.is_symlink():
        raise UserInputError("refusing to use a symbolic link as output folder", file=target)
    if target.is_dir() and any(target.iterdir()):
        marker = read_marker(target)
        if marker is None or marker["tool"] != tool:
            raise UserInputError(
                f"output folder holds files {tool} did not write; choose a new or empty folder", file=target)
        _refuse_live_writer(target, marker)
    target.mkdir(parents=True, exist_ok=True)
    write_marker(target, tool, state="in-use")
    return target


def _refuse_live_writer(target: Path, marker: dict, field: str = "--out") -> None:
    if marker.get("pid") != os.getpid() and writer_alive(marker):
        raise UserInputError(f"another run (process {marker['pid']}) is still writing this folder; wait for it, "
                             "stop it, or choose another folder", file=target, field=field)


def release_output_dir(out: str | os.PathLike[str], tool: str) -> None:
    """Record the entries of a folder claimed by :func:`claim_output_dir` once the command has finished."""
    write_marker(Path(out), tool)


def _claimed_ancestor(path: Path) -> Path | None:
    for parent in Path(os.path.abspath(path)).parents:
        if read_marker(parent) is not None:
            return parent
    return None


def remove_owned(path: str | os.PathLike[str], owner: str | os.PathLike[str] | None = None) -> None:
    """Delete ``path``, a file or folder strictly below a folder this toolkit wrote or claimed.

    Args:
        path: what to delete; nothing happens when it does not exist.
        owner: the claimed folder it must lie below; by default the nearest ancestor carrying a marker.

    Raises:
        UserInputError: no such owner, or ``path`` does not lie below it.
    """
    target = Path(path)
    if not target.exists() and not target.is_symlink():
        return
    absolute = Path(os.path.abspath(target))
    folder = _claimed_ancestor(target) if owner is None else Path(os.path.abspath(owner))
    if folder is None or read_marker(folder) is None or absolute == folder or not absolute.is_relative_to(folder):
        raise UserInputError("refusing to delete: it does not lie below a folder this toolkit wrote", file=target)
    if target.is_symlink() or not target.is_dir():
        target.unlink()
    else:
        shutil.rmtree(target)


def _process_started(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), else ``None``.

    With the pid it names one process for good: a pid reused after a reboot or a wrap-around has
    another start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name before ")" may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def writer_alive(marker: dict) -> bool:
    """True when the process that wrote an ``in-use`` ``marker`` still runs (another run is writing)."""
    if marker.get("state") != "in-use" or not _pid_alive(marker.get("pid")):
        return False
    stated, now = marker.get("started"), _process_started(marker["pid"])
    return not (isinstance(stated, int) and now is not None and stated != now)


def _holds_only_marker(target: Path) -> bool:
    return {p.name for p in target.iterdir()} == {OWNER_MARKER}


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(parent: Path, name: str) -> list[Path]:
    """Remove staging folders for ``name`` in ``parent`` left by runs that are no longer alive."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for candidate in parent.glob(f".{name}.tmp-*"):
        if candidate.is_symlink() or not candidate.is_dir():
            continue
        marker = read_marker(candidate)
        if marker is None or marker.get("state") != "staging" or _pid_alive(marker.get("pid")):
            continue
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
    return removed


def replace_dir(staging: Path, target: Path, tool: str) -> None:
    """Move a finished ``staging`` folder to ``target``, replacing a folder this toolkit wrote there."""
    reason = why_not_replaceable(target)
    if reason is not None:  # the destination changed while we worked
        raise UserInputError(f"refusing to replace: {reason}", file=target)
    write_marker(staging, tool)
    swap_in(staging, target)


def swap_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing ``target`` is first moved into a fresh hidden folder,
    then deleted with it. The caller has established that ``target`` may be replaced."""
    old: Path | None = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_output_dir(out: str | os.PathLike[str], tool: str, *, overwrite: bool = False,
                      flag: str = "--overwrite") -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``out`` on success and is deleted on failure.

    Args:
        out: the destination folder.
        tool: the command that writes it, recorded in the ownership marker.
        overwrite: replace an existing non-empty ``out`` (only one this toolkit wrote).
        flag: the option named in the refusal message.

    Raises:
        UserInputError: ``out`` exists and may not be replaced (see :func:`check_output_dir`).
    """
    target = Path(out)
    check_output_dir(target, overwrite=overwrite, flag=flag)
    require_writable(target, field="--out")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target.parent, target.name)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write_marker(staging, tool, state="staging")
        yield staging
        replace_dir(staging, target, tool)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --- the output rule of the commands (--out, --overwrite, --resume) ----------------------------------------


def check_output_file(path: str | os.PathLike[str], *, overwrite: bool, field: str = "--out") -> Path:
    """A file output: refused when it exists unless ``overwrite``; a folder in its place is always refused."""
    target = Path(path)
    if target.is_dir():
        raise UserInputError("is a folder, expected a file", file=target, field=field)
    if target.exists() and not overwrite:
        raise UserInputError("output exists (use --overwrite to replace it)", file=target, field=field)
    require_writable(target, field=field, is_dir=False)
    return target


def prepare_output_dir(
    path: str | os.PathLike[str], tool: str, *, overwrite: bool, resume: bool | None = None, field: str = "--out",
) -> Path:
    """Apply the one overwrite rule to the output folder of ``tool``; nothing is created.

    - a missing or empty folder is fine, and so is one holding only a marker (a run stopped before it
      wrote anything);
    - a folder another live process is still writing (its ``in-use`` marker names it) is refused, with
      ``--resume`` and ``--overwrite`` alike;
    - with ``resume`` true, an existing folder is taken up again as it is (nothing is deleted); ``None``
      says the command cannot resume (the refusal then names only ``--overwrite``);
    - otherwise an existing non-empty folder is refused with one line naming ``--overwrite``;
    - ``--overwrite`` deletes it only when ``tool`` wrote it: its ownership marker names ``tool`` and,
      for a finished run, lists every entry in it (a file a user added, a link, the home folder or a
      folder holding the working directory are refused, and nothing is deleted).

    Use :func:`owned_output_dir` around the writing, which marks the folder as ``tool``'s.

    Raises:
        UserInputError: naming the folder, the flag and the reason.
    """
    target = Path(path)
    if target.is_symlink():
        raise UserInputError("refusing to use a symbolic link as output folder", file=target, field=field)
    require_writable(target, field=field)
    if not (target.is_dir() and any(target.iterdir())):
        return target
    marker = read_marker(target)
    if marker is not None:
        _refuse_live_writer(target, marker, field)
        if _holds_only_marker(target):  # a run stopped before it wrote anything: nothing to keep
            return target
    if resume:
        return target
    if not overwrite:
        hint = "" if resume is None else " or --resume to continue it"
        raise UserInputError(f"output exists and is not empty (use --overwrite to replace it{hint})",
                             file=target, field=field)
    if marker is None or marker["tool"] != tool:
        raise UserInputError(f"refusing to replace: it was not written by {tool} (no ownership marker of it)",
                             file=target, field=field)
    if marker.get("state") == "complete":
        reason = why_not_replaceable(target)
    else:  # an interrupted run of the same command: everything in it was written while it ran
        reason = "it is the root, the home folder or a folder holding the working directory" if _is_protected(
            target) else None
    if reason is not None:
        raise UserInputError(f"refusing to replace: {reason}", file=target, field=field)
    shutil.rmtree(target)
    return target


@contextmanager
def owned_output_dir(
    path: str | os.PathLike[str], tool: str, *, overwrite: bool, resume: bool | None = None, field: str = "--out",
) -> Iterator[Path]:
    """Check ``path`` by :func:`prepare_output_dir`, let the caller write into it, then mark it as ``tool``'s.

    The folder is created and marked ``in-use`` (naming this process) before the caller writes, so that
    a run killed outright is still known as ``tool``'s: ``--resume`` and ``--overwrite`` may take it up,
    and neither may while the run is alive. When the block ends the marker becomes ``complete``
    (listing the entries) on success and stays ``in-use`` after a failure or interruption. A block that
    wrote nothing leaves nothing behind (the folder is removed when this call created it).
    """
    target = prepare_output_dir(path, tool, overwrite=overwrite, resume=resume, field=field)
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    write_marker(target, tool, state="in-use")
    finished = False
    try:
        yield target
        finished = True
    finally:
        if target.is_dir() and not target.is_symlink():
            if _holds_only_marker(target):
                (target / OWNER_MARKER).unlink()
                if created:
                    target.rmdir()
            else:
                write_marker(target, tool, state="complete" if finished else "in-use")
