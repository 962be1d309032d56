"""What a run folder records so it can be reproduced: command, seed, config, versions, data hashes.

Written as `config.toml` (see docs/architecture.md, "A run folder"). Package versions are read from the
installed distributions' metadata, so recording them imports nothing heavy.
"""

from __future__ import annotations

import datetime
import hashlib
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import tomli_w

from fedgan.atomic import write_text_atomic
from fedgan.data.store import MANIFEST

TRACKED_PACKAGES = ("fedgan", "numpy", "opencv-python-headless", "pydicom", "pillow", "torch", "flwr", "opacus")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def store_fingerprint(store: Path) -> str:
    """sha256 of a store's manifest, which itself holds the sha256 of every shard."""
    return hashlib.sha256((Path(store) / MANIFEST).read_bytes()).hexdigest()


def write_run_record(folder: Path, *, seed: int, config: dict[str, Any], stores: dict[str, Path]) -> Path:
    """Write `folder/config.toml`; `config` maps section names to kebab-case dicts."""
    record = {
        "run": {
            "command": " ".join(sys.argv),
            "seed": seed,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "platform": platform.platform(),
        },
        "versions": package_versions(),
        "config": config,
        "data": {
            name: {"path": str(Path(path).resolve()), "manifest-sha256": store_fingerprint(path)}
            for name, path in stores.items()
        },
    }
    path = Path(folder) / "config.toml"
    write_text_atomic(path, tomli_w.dumps(record))
    return path
