"""A store's manifest as a table a person can read (`fedgan inspect`)."""

from __future__ import annotations

from fedgan.data.store import SPLITS, Store


def _grade_table(store: Store) -> list[str]:
    keys = sorted(
        {k for split in SPLITS for k in store.manifest["splits"][split]["per_grade"]},
        key=lambda k: (not k.isdigit(), k),
    )
    header = f"  {'split':<8}" + "".join(f"{('grade ' + k) if k.isdigit() else k:>11}" for k in keys) + f"{'total':>8}"
    lines = [header]
    for split in SPLITS:
        info = store.manifest["splits"][split]
        lines.append(
            f"  {split:<8}" + "".join(f"{info['per_grade'].get(k, 0):>11}" for k in keys) + f"{info['count']:>8}"
        )
    return lines


def describe_store(store: Store, *, records: int = 0) -> str:
    m = store.manifest
    c, h, w = m["image_shape"]
    splits = ", ".join(f"{s} {m['splits'][s]['count']}" for s in SPLITS)
    lines = [
        f"store       {store.path}",
        f"format      {m['format']} v{m['format_version']}, written by {m['created_by']}",
        f"source      {m['source']['input']}  (layout: {m['source']['layout']})",
        f"images      {m['count']}  ({splits})",
        f"image       {c} x {h} x {w} float32 in [{m['value_range'][0]:g}, {m['value_range'][1]:g}], "
        f"{m['compression']} TFRecord",
        "grades",
        *_grade_table(store),
        "preprocess  " + "  ".join(f"{k}={v}" for k, v in m["preprocess"].items()),
        "store       " + "  ".join(f"{k}={v}" for k, v in m["store"].items()),
        "shards",
    ]
    for split in SPLITS:
        for shard in m["splits"][split]["shards"]:
            lines.append(f"  {shard['file']:<28}{shard['count']:>7} records  sha256 {shard['sha256'][:16]}")
    skipped = m["skipped"]
    lines.append(f"skipped     {len(skipped)}")
    lines += [f"  {s['where']}: {s['problem']}" for s in skipped[:20]]
    if len(skipped) > 20:
        lines.append(f"  ... and {len(skipped) - 20} more (see manifest.json)")
    if records:
        lines.append(f"records (first {records})")
        lines += [f"  {r['split']:<8}{r['label']:>3}  {r['id']:<24}{r['source']}" for r in m["records"][:records]]
    lines.append(f"tf.data     {m['tf_data']}")
    return "\n".join(lines)
