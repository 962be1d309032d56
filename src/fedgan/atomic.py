"""Writing outputs so that nothing half-written is ever left behind.

Files go to a temporary name in the same folder and are renamed into place (rename is atomic
on one filesystem); whole output folders are staged next to their destination and renamed
when complete, so an interrupted or failed command leaves either the old output or none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fedgan.errors import FedGANError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_directory(destination: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder that becomes `destination` only if the block succeeds.

    An existing non-empty `destination` is an error unless `overwrite`; then it is replaced
    only after the new content is complete.
    """
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise FedGANError(f"{destination}: exists and is not a folder")
    if destination.is_dir() and any(destination.iterdir()) and not overwrite:
        raise FedGANError(f"{destination}: already exists and is not empty (use --overwrite to replace it)")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.partial-"))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if destination.exists():
        retired = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.old-"))
        os.replace(destination, retired / "content")
        os.replace(staging, destination)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, destination)
