"""The JVM of the embedded mini-cluster: its class-data archive, so that a job starts seconds
sooner, and its end, so that a finished job exits at once.

Most of a short job's start-up is the JVM loading and verifying the many classes of Flink,
Pekko, Beam and Kafka. A run without an archive asks the JVM to write the classes it loaded
to a dynamic CDS archive when it exits (``-XX:ArchiveClassesAtExit``); every later run maps
that archive instead of loading the classes one by one (``-XX:SharedArchiveFile``; BENCH.md
gives the start-up it makes). The archive belongs to one JVM
binary, one set of JVM options and one set of Flink jars (the JVM refuses any other), so its
name is a digest of all three and a change of any makes a new one.

Only a run that ends on its own writes one (``--bounded``): the JVM writes it on a normal
exit, which takes some seconds once, and the launcher waits for it, then renames it into
place. A run stopped by a signal leaves none, and ``-Xshare:auto`` (the JVM's default) runs
on without an archive that is missing or unusable.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pyflink
from pyflink.pyflink_gateway_server import find_java_executable

# The user's own JVM_ARGS decide about class-data sharing if they name any of these.
USER_CHOICE = ("-Xshare", "SharedArchiveFile", "ArchiveClassesAtExit", "AutoCreateSharedArchive")
# Archives kept, the newest first (each ~120 MB).
KEEP = 3
# How long the launcher waits for the JVM to write a new archive after the job.
WRITE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Archive:
    """Where this JVM's archive lives (``path``) and, while it is written, its part file."""

    path: Path
    part: Path | None  # set when this run writes the archive at its exit

    @property
    def options(self) -> list[str]:
        if self.part is None:
            return [f"-XX:SharedArchiveFile={self.path}"]
        # Thousands of "Skipping ...: Not linked" warnings while writing are no news.
        return [f"-XX:ArchiveClassesAtExit={self.part}", "-Xlog:cds*=error"]


def java_executable() -> Path | None:
    """The ``java`` PyFlink starts (its own choice: ``env.java.home``, JAVA_HOME, PATH)."""
    found = shutil.which(find_java_executable())
    return Path(found).resolve() if found else None


def digest(java: Path, jvm_options: list[str]) -> str:
    """What the archive depends on: the JVM binary, its options and Flink's jars."""
    h = hashlib.sha256()
    lib = Path(pyflink.__file__).parent / "lib"
    for path in [java, *sorted(lib.glob("*.jar"))]:
        st = path.stat()
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update("\0".join(jvm_options).encode())
    return h.hexdigest()[:16]


def archive_for(folder: Path, jvm_options: list[str], writes: bool) -> Archive | None:
    """The archive to use, or to write at exit when ``writes`` and there is none yet; None
    when the user chose for themselves or there is nothing to use or write."""
    java = java_executable()
    if java is None or any(u in o for o in jvm_options for u in USER_CHOICE):
        return None
    path = folder / f"flink-{digest(java, jvm_options)}.jsa"
    if path.exists():
        return Archive(path, None)
    if not writes:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return Archive(path, path.with_name(f"{path.name}.part-{os.getpid()}"))


def _gateway_pid(procfs: Path = Path("/proc")) -> int | None:
    """The PyFlink gateway JVM: this process's child running PythonGatewayServer; None where
    there is no such child or no /proc to find it in (not Linux: the JVM then ends by itself
    once this process has gone)."""
    if not procfs.is_dir():
        return None
    for proc in procfs.iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (proc / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == os.getpid() and b"PythonGatewayServer" in (proc / "cmdline").read_bytes():
                return int(proc.name)
    return None


def end(archive: Archive | None) -> bool:
    """Ends the gateway JVM once the job is done, the normal way: at once, instead of when its
    watchdog notices this process gone (up to a second later, which whoever waits for the
    job's output waits too), and so that it writes its archive if asked to. Then moves that
    archive into place. True when a new archive is in place."""
    pid = _gateway_pid()
    if pid is None:
        return False
    from pyflink.java_gateway import get_gateway

    # The JVM goes on purpose: py4j would log the call's lost answer and, as this process
    # exits, a refused connection for each Java object it cleans up. The job has nothing more
    # to log.
    logging.disable(logging.CRITICAL)
    with contextlib.suppress(Exception):  # the call never returns: the JVM is gone
        get_gateway().jvm.java.lang.System.exit(0)
    status = _wait(pid, WRITE_TIMEOUT_S)
    if archive is None or archive.part is None:
        return False
    if status != 0 or not archive.part.exists() or archive.part.stat().st_size == 0:
        archive.part.unlink(missing_ok=True)
        return False
    os.replace(archive.part, archive.path)
    tidy(archive.path.parent)
    return True


def _wait(pid: int, timeout_s: float) -> int | None:
    """The exit status of child ``pid`` once it ended (0 if something else reaped it), None
    if it runs on after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped by subprocess already: gone
            return 0
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


def tidy(folder: Path) -> None:
    """Keeps the ``KEEP`` newest archives (runs with other JVM options use theirs) and drops
    the parts of runs that died writing one."""
    archives = sorted(folder.glob("flink-*.jsa"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[KEEP:]:
        old.unlink(missing_ok=True)
    for part in folder.glob("flink-*.jsa.part-*"):
        pid = part.name.rpartition("-")[2]
        if not (pid.isdigit() and _alive(int(pid))):
            part.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
