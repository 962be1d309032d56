"""Hospital failures as a person wants to read them in the log and in metrics.jsonl."""

from __future__ import annotations


def short_reason(reason: str) -> str:
    """The hospital's own error message out of Flower's wrapping.

    The simulation engine reports a client exception as the Ray task's repr with a traceback,
    ending in `Message: <the exception's text>'>`; the deployment engine passes the text alone.
    """
    return reason.rsplit("Message: ", 1)[-1].strip().removesuffix("'>").strip()


class RoundFailed(RuntimeError):
    """A round that cannot be committed (too few usable replies, or not aggregated): nothing of
    it is checkpointed or recorded, and the run stops so that `--resume` repeats it."""
