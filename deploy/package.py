"""Builds the deployment packages: what a platform that installs nothing takes as one zip.

    python deploy/package.py lambda      # build/dist/marketlag-ingest-lambda.zip
    python deploy/package.py flink-app   # build/dist/marketlag-dlq-flink-app.zip

``lambda``: the ingest handlers for AWS Lambda (runtime python3.11, x86_64): the packages
``ingest``, ``kafkaio``, ``settings`` and ``udfs``, ``conf/job.yaml``, and the wheels of
``deploy/requirements.txt`` unpacked at the zip's root, where Lambda's task root puts them on
the path. Handlers: ``ingest.handlers.rss_handler``, ``ingest.handlers.polymarket_handler``.

``flink-app``: the job for Amazon Managed Service for Apache Flink (Flink 2.2, Python 3.11),
laid out as its property group ``kinesis.analytics.flink.run.options`` names it (see
:data:`RUN_OPTIONS`): ``main.py`` (the job's entry), the project's packages and
``conf/job.yaml`` under ``app/``, the wheels under ``deps/``, and one jar,
``lib/marketlag-dlq-flink-app.jar``: the Flink Kafka connector and the project's Java pieces
merged. PyFlink and its own dependencies are the runtime's.

Both: wheels for manylinux2014 x86_64 and CPython 3.11 (pip ``--platform``, ``--only-binary``:
no compiler, whatever machine builds it), entries sorted and dated 1980-01-01, so the same
sources make the same zip. The script imports nothing of the project; it runs with the
project's venv (for its pip).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "build" / "dist"
REQUIREMENTS = ROOT / "deploy" / "requirements.txt"
PLATFORM = ("manylinux2014_x86_64", "manylinux_2_17_x86_64")
LAMBDA_PACKAGES = ("ingest", "kafkaio", "settings", "udfs")
FLINK_APP_PACKAGES = ("jobs", "udfs", "settings", "bridge", "kafkaio")
CONNECTOR_JARS = (
    ROOT / "build" / "lib" / "flink" / "flink-sql-connector-kafka.jar",
    ROOT / "build" / "lib" / "flink" / "marketlag-dlq-connector.jar",
)
FLINK_APP_JAR = "lib/marketlag-dlq-flink-app.jar"
# kinesis.analytics.flink.run.options: paths inside the zip, as the service resolves them.
RUN_OPTIONS = {"python": "main.py", "jarfile": FLINK_APP_JAR, "pyFiles": "app/,deps/"}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

FLINK_APP_MAIN = '''"""Entry of the MarketLag DLQ job on Amazon Managed Service for Apache Flink
(kinesis.analytics.flink.run.options: python = main.py). The job's settings come from the
application's properties (README, "On Amazon Managed Service for Apache Flink")."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
for folder in ("app", "deps"):  # also in pyFiles, which the Python workers get
    sys.path.insert(0, os.path.join(HERE, folder))

from jobs.dlq_job import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


class PackageError(Exception):
    """A package cannot be built; the message says why."""


def sources(package: str) -> Iterator[Path]:
    """The files of one of the project's packages that a package ships: its Python sources."""
    for path in sorted((ROOT / package).rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


def install_wheels(target: Path) -> None:
    """Unpacks the wheels of ``deploy/requirements.txt`` for the target platform into
    ``target`` (pip, binary wheels only: a missing one is an error, never a build)."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    cmd += [f"--platform={p}" for p in PLATFORM]
    cmd += ["--implementation=cp", "--python-version=3.11", "--only-binary=:all:"]
    cmd += ["--no-deps", "--no-compile", "--target", str(target), "-r", str(REQUIREMENTS)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PackageError(f"pip could not fetch the wheels:\n{done.stderr.strip()}")
    for junk in target.glob("*.dist-info/RECORD"):
        junk.unlink()  # paths of the machine that built it; nothing reads it at run time
    for cache in target.rglob("__pycache__"):
        shutil.rmtree(cache)


def tree(folder: Path, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """(name in the zip, file) for every file under ``folder``."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield prefix + path.relative_to(folder).as_posix(), path


def project_files(packages: Iterable[str], prefix: str = "") -> Iterator[tuple[str, Path]]:
    for package in packages:
        for path in sources(package):
            yield prefix + path.relative_to(ROOT).as_posix(), path
    yield prefix + "conf/job.yaml", ROOT / "conf" / "job.yaml"


def write_zip(out: Path, files: Iterable[tuple[str, Path | bytes]]) -> None:
    """A zip of ``files`` in name order, each dated 1980-01-01, 0644 (0755 if executable)."""
    entries = sorted(files, key=lambda e: e[0])
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise PackageError(f"{out.name}: a name twice")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, source in entries:
            data = source if isinstance(source, bytes) else source.read_bytes()
            mode = 0o755 if isinstance(source, Path) and source.stat().st_mode & 0o111 else 0o644
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    partial.replace(out)


def merged_jar(jars: Iterable[Path]) -> bytes:
    """One jar holding every class of ``jars``: the first jar's manifest, service files joined,
    a class in two jars an error (they would shadow each other)."""
    entries: dict[str, bytes] = {}
    for jar in jars:
        if not jar.exists():
            raise PackageError(f"{jar.relative_to(ROOT)} is missing: run 'make setup'")
        with zipfile.ZipFile(jar) as zf:
            for info in zf.infolist():
                name = info.filename
                if info.is_dir() or name.startswith("META-INF/maven/"):
                    continue
                data = zf.read(info)
                if name not in entries:
                    entries[name] = data
                elif name.startswith("META-INF/services/"):
                    entries[name] = entries[name].rstrip(b"\n") + b"\n" + data
                elif name.endswith(".class") and entries[name] != data:
                    raise PackageError(f"{name} is in two jars with different contents")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "merged.jar"
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(entries, key=lambda n: (n != "META-INF/MANIFEST.MF", n)):
                zf.writestr(zipfile.ZipInfo(name, ZIP_DATE), entries[name])
        return out.read_bytes()


def build_lambda(out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        deps = Path(tmp)
        install_wheels(deps)
        write_zip(out, [*tree(deps), *project_files(LAMBDA_PACKAGES)])
    return out


def build_flink_app(out: Path) -> Path:
    jar = merged_jar(CONNECTOR_JARS)
    with tempfile.TemporaryDirectory() as tmp:
        deps = Path(tmp)
        install_wheels(deps)
        write_zip(
            out,
            [
                ("main.py", FLINK_APP_MAIN.encode()),
                (FLINK_APP_JAR, jar),
                *tree(deps, "deps/"),
                *project_files(FLINK_APP_PACKAGES, "app/"),
            ],
        )
    return out


BUILDERS = {
    "lambda": (build_lambda, "marketlag-ingest-lambda.zip"),
    "flink-app": (build_flink_app, "marketlag-dlq-flink-app.zip"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/package.py", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=sorted(BUILDERS))
    parser.add_argument("--out", type=Path, default=DIST, help="folder of the zip")
    args = parser.parse_args(argv)
    build, name = BUILDERS[args.what]
    try:
        out = build(args.out / name)
    except PackageError as e:
        print(f"package: error: {e}", file=sys.stderr)
        return 2
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    size = out.stat().st_size
    print(f"{out} ({size / 1e6:.1f} MB, sha256 {digest[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
