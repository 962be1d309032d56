"""Writing outputs so that nothing half-written is ever left behind.

Files go to a temporary name in the same folder, are synced to disk, and are renamed into
place (rename is atomic on one filesystem; the folder is synced too, so the rename survives a
power loss); whole output folders are staged next to their destination and renamed
when complete, so an interrupted or failed command leaves either the old output or none.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from fedgan.errors import FedGANError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable: a rename lives in the folder's entry, which has its own fsync."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write `path` so that after a crash or power loss it holds the old content or all of the new.

    `durable=False` keeps the atomic rename (no reader ever sees half a file) but skips both
    syncs, for state that a power loss may lose because a durable copy exists to resume from."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())  # the data is on disk before the name points at it
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, path)
        if durable:
            sync_folder(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


#: written into every folder `staged_directory` makes: `--overwrite` replaces only folders holding it
OWNER_MARK = ".fedgan-output"


def written_by_fedgan(folder: Path) -> bool:
    """Our mark, or the manifest of a store written before the mark existed."""
    if (folder / OWNER_MARK).is_file():
        return True
    try:
        return json.loads((folder / "manifest.json").read_text()).get("format") == "fedgan-store"
    except (OSError, ValueError, AttributeError):
        return False


def check_destination(destination: Path, inputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse to write `destination` over anything FedGAN did not write, or over its own inputs."""
    target = destination.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if target == source or target in source.parents:
            raise FedGANError(
                f"{destination}: is {'the input' if target == source else 'a folder holding the input'} "
                f"{source}; choose another output folder"
            )
    if destination.exists() and not destination.is_dir():
        raise FedGANError(f"{destination}: exists and is not a folder")
    if destination.is_dir() and any(destination.iterdir()):
        if not overwrite:
            raise FedGANError(f"{destination}: already exists and is not empty (use --overwrite to replace it)")
        if not written_by_fedgan(destination):
            raise FedGANError(
                f"{destination}: --overwrite replaces only folders FedGAN wrote, and this one has no {OWNER_MARK}; "
                "move it away or choose another output folder"
            )


@contextlib.contextmanager
def staged_directory(destination: Path, *, overwrite: bool = False, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """Yield an empty staging folder that becomes `destination` only if the block succeeds.

    An existing non-empty `destination` is an error unless `overwrite` and FedGAN wrote it (it
    holds `OWNER_MARK`); then it is replaced only after the new content is complete. A
    destination that is, or holds, one of `inputs` is always refused.
    """
    destination = Path(destination)
    check_destination(destination, inputs, overwrite)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.partial-"))
    os.chmod(staging, 0o777 & ~_umask())
    (staging / OWNER_MARK).write_text("written by fedgan; `--overwrite` may replace this folder\n")
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
