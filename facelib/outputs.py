"""Writing results: every file is written to a temporary name beside its target, then renamed into place,
so an interrupted or failed command never leaves a half-written table, figure or mask behind."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from facelib.errors import RunBusyError


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto the target only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp creates 0600; give the file the permissions a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(folder: str | Path, what: str) -> Iterator[None]:
    """Hold `folder/.lock` for the block, so no other process works on `what` at the same time; the lock is
    the kernel's (flock), so it goes away with the process that held it, however that process ended. A second
    process is refused with the first one's process id, host and start time (written into the lock file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunBusyError(
                f"{what} is already being worked on by {holder} (lock {path}); wait for it to end, or stop it "
                "and run this again (an interrupted run resumes from its last checkpoint)"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        handle.write(f"process {os.getpid()} on {platform.node()} since {started}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_text(target: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def to_markdown(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured Markdown table of a DataFrame (index included when it is named)."""
    if frame.index.name is not None:
        frame = frame.reset_index()

    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "–"  # missing (None) or not defined (NaN)
        if isinstance(value, float):
            return format(value, floatfmt)
        return str(value)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def write_table(
    frame: pd.DataFrame, stem: str | Path, title: str | None = None, note: str | None = None, floatfmt: str = ".4g"
) -> list[Path]:
    """Write a table as `<stem>.csv` (full precision) and `<stem>.md` (title, table, then a note such as the
    provenance line); return both paths."""
    stem = Path(stem)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=frame.index.name is not None, float_format="%.6g")
    heading = f"# {title}\n\n" if title else ""
    footer = f"\n{note}\n" if note else ""
    write_text(md_path, heading + to_markdown(frame, floatfmt) + footer)
    return [csv_path, md_path]


def _git(*args: str) -> str:
    try:
        cwd = Path(__file__).resolve().parent
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def commit() -> str:
    """The facelib commit that is running, with "+dirty" when tracked files outside results/ have uncommitted
    changes: read
    once per process (training calls it when it starts), so a long run records the code it started with even
    when the checkout moves on while it trains.

    `FACELIB_COMMIT` overrides it, for copies of the tree whose git metadata is not the source's (the GPU
    machine receives such a copy: pass the source's commit along)."""
    if os.environ.get("FACELIB_COMMIT"):
        return os.environ["FACELIB_COMMIT"]
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)results")
    return head + ("+dirty" if changed else "")  # what commands write (results/) is not the code that ran


def machine() -> str:
    """CPU model and core count (and the GPU where torch sees one), for stating where a number came from."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    text = f"{cpu}, {os.cpu_count()} cores"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


REPOSITORY = Path(__file__).resolve().parents[1]


ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~<-])/(?:[\w.@+-]+/)+[\w.@+-]+")
"""An absolute POSIX path of at least two parts inside text (not a URL's path, a relative or ~ path, or an
HTML closing tag)."""


def shown_path(path: str | Path) -> str:
    """A path as records show it, never a machine's absolute path: relative to the repository when inside it,
    ~/... when inside the home folder, else relative to the repository (../shared/data/...). Relative paths
    stay as given."""
    if not Path(path).is_absolute():
        return str(path)
    resolved = Path(path).resolve()
    with contextlib.suppress(ValueError):
        return str(resolved.relative_to(REPOSITORY))
    with contextlib.suppress(ValueError, RuntimeError):
        return f"~/{resolved.relative_to(Path.home())}"
    return os.path.relpath(resolved, REPOSITORY)


def shown_paths(text: str) -> str:
    """`text` with every absolute path in it written as `shown_path` writes it (for records and notes)."""
    return ABSOLUTE_PATH.sub(lambda match: shown_path(match.group()), text)


def provenance(data: str, command: str | None = None) -> str:
    """One line saying what produced a table: command (default: this process's, quoted to paste into a shell), data,
    commit, machine, date."""
    if command is None:
        is_cli = Path(sys.argv[0]).name == "facelib" or Path(sys.argv[0]).parts[-2:] == ("facelib", "__main__.py")
        command = shlex.join(["facelib", *sys.argv[1:]]) if is_cli else "facelib (library call)"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return shown_paths(f"Made by `{command}` on data `{data}`, commit {commit()}, {machine()}, {date}.")


def save_figure(figure, target: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    target = Path(target)
    with atomic_path(target) as tmp:
        kind = target.suffix.lstrip(".").replace("jpg", "jpeg") or "png"
        options = {"pil_kwargs": {"quality": 85}} if kind == "jpeg" else {}
        figure.savefig(tmp, dpi=dpi, bbox_inches="tight", format=kind, **options)
    plt.close(figure)
    return target
