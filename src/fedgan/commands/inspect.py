"""`fedgan inspect`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedgan.commands.common import command


def add_parser(sub: Any) -> None:
    inspect = command(
        sub,
        "inspect",
        "print a store's manifest as a table",
        "Show counts per grade and split, image shape, preprocessing, shards and skipped inputs.",
        """
        fedgan inspect stores/fundus
        fedgan inspect stores/fundus --records 10 --verify
        """,
    )
    inspect.add_argument("store", type=Path, help="store folder")
    inspect.add_argument("--records", type=int, default=0, help="also list the first N records")
    inspect.add_argument("--verify", action="store_true", help="recompute every shard's sha256 against the manifest")
    inspect.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fedgan.data.inspect import describe_store
    from fedgan.data.store import Store

    store = Store(args.store)
    print(describe_store(store, records=args.records))
    if args.verify:
        bad = store.verify()
        if bad:
            print(f"verify: {len(bad)} shard(s) differ from the manifest: {', '.join(bad)}")
            return 1
        print("verify: every shard matches its sha256")
    return 0
