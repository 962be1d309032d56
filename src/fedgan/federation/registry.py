"""The operator's registry of hospitals for a deployment: who may take part, and with what weight.

In deployment the coordinator cannot count a hospital's images, and FedAvg weighs each reply by
the count it claims: one hospital claiming 1e9 images would become the global model. So the
operator writes down, once, each hospital's id (the `partition-id` in its SuperNode's node
config) and its training-set size, as agreed out of band, in a TOML file:

```toml
[hospitals]
0 = 1200   # hospital id = training images
1 = 800
2 = 450
```

A reply from an unlisted hospital, or one whose claimed count differs, is refused
(`fedgan.federation.screening`), and SecAgg+'s weight range is the largest listed count.
SuperNode authentication (`fedgan certs`) decides which machines may connect at all.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from fedgan.errors import FedGANError


def read_registry(path: Path) -> dict[int, int]:
    """Hospital id -> training images; every problem is one line naming the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FedGANError(f"{path}: hospital registry not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FedGANError(f"{path}: not a TOML hospital registry ({exc})") from None
    table = data.get("hospitals")
    if not isinstance(table, dict) or not table:
        raise FedGANError(f"{path}: needs a [hospitals] table of `id = images` lines")
    registry: dict[int, int] = {}
    for key, images in table.items():
        if not key.isdigit() or not isinstance(images, int) or isinstance(images, bool) or images < 1:
            raise FedGANError(
                f"{path}: hospital {key!r} = {images!r}: ids are non-negative integers and images a positive integer"
            )
        registry[int(key)] = images
    return registry
