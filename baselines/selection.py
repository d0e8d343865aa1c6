"""Which earlier release(s) a candidate is compared with."""

from __future__ import annotations

from monitor.store import Release, Store


def choose_baselines(store: Store, service: str, *, before: float, count: int = 1) -> list[Release]:
    """The pinned release if one is pinned (and still may be) and started before the
    candidate, else the last `count` healthy releases started before it.

    Healthy means the verdict was pass and nobody invalidated it since: a release that
    ended in rollback, hotfix or inconclusive never becomes a baseline by itself (a person
    may pin an inconclusive one).
    """
    pinned = store.pinned(service)
    if pinned is not None:
        release = store.release(service, pinned)
        # A pin made before its release was found bad no longer counts, and a candidate
        # is never judged against a release that came after it.
        if release.why_not_pinnable() is None and release.started_at < before:
            return [release]
    return store.healthy_releases(service, before=before, limit=count)
