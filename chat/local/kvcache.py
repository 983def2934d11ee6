"""Prefix KV-cache reuse across turns: prefill only what is new since the last turn.

A chat prompt at turn n+1 begins with the prompt and answer of turn n, so the keys and values
the model computed for them can be kept and reused. Two small pieces:

* `PrefixCache`: what one session owns, the KV cache of its last turn and the token ids it
  covers. `reuse_for(prompt_ids)` hands the cache out cropped to the longest common prefix
  with the new prompt (Retry, Undo, edited instructions and trimmed history all just give a
  shorter common prefix), or None when nothing matches. Handing out removes it: two
  generations never write into one cache; the next one waits (briefly) for it to come back.
* `CachePool`: held by the engine, it bounds memory over all sessions. Kept caches are counted
  in sessions and tokens; the least recently used are released first.

The invariant that makes reuse exact: `ids` are precisely the tokens whose keys and values the
cache holds, in order, so a prompt that starts with them gets the same attention state whether
those tokens are prefilled again or not.

>>> cache = PrefixCache()
>>> cache.reuse_for([1, 2, 3])  # nothing kept yet
(None, 0)
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Sequence

from ..engine import SessionCache

# Defaults for the engine's pool. A kept token costs layers × 2 × kv_heads × head_dim × dtype bytes:
# 46 KB for SmolLM2-135M in float32, 56 KB for a 7B Qwen2.5 in bfloat16, so 32k tokens is ~1.5–1.8 GB.
MAX_CACHED_SESSIONS = 16  # sessions whose last turn is kept; older ones prefill from scratch again
MAX_CACHED_TOKENS = 32_768  # tokens kept over all sessions together
BUSY_WAIT_S = 10.0  # longest a new answer waits for its session's cache to come back (warm-up, a stopped answer)


class PrefixCache(SessionCache):
    """The KV cache of one session's last turn and the token ids it covers. Thread-safe.

    The cache is out while an answer (or a warm-up for the next turn) works with it; whoever
    takes it out with `reuse_for` or `lend` gives it back with exactly one `update`.
    """

    def __init__(self) -> None:
        self.ids: tuple[int, ...] = ()
        self.kv: Any = None  # a transformers `Cache` (DynamicCache) or None
        self.pool: "CachePool | None" = None  # the pool (one per engine and model) that counts it
        self._out = 0  # takers that have not given it back yet
        self._changed = threading.Condition()

    @property
    def tokens(self) -> int:
        return len(self.ids) if self.kv is not None else 0

    def reuse_for(self, prompt_ids: Sequence[int], wait_s: float = BUSY_WAIT_S) -> tuple[Any, int]:
        """Takes the cache out, cropped to the longest common prefix with `prompt_ids`.

        Returns (cache, reused tokens), or (None, 0) when nothing can be reused. At least one
        prompt token is always left to prefill: `generate` needs it to compute the next token.
        While the cache is out, waits up to `wait_s` for it to come back.
        """
        with self._changed:
            self._changed.wait_for(lambda: not self._out, timeout=wait_s)
            ids, kv = self._take()
        return crop_to_prefix(ids, kv, prompt_ids, keep_last=1)

    def lend(self) -> tuple[tuple[int, ...], Any] | None:
        """Takes the cache out as it is, at once, or None when it is out or empty."""
        with self._changed:
            if self._out or self.kv is None:
                return None
            return self._take()

    def update(self, ids: Sequence[int], kv: Any) -> None:
        """Gives the cache back holding `kv` (None: nothing), which must cover exactly `ids`."""
        if kv is not None and kv.get_seq_length() != len(ids):
            kv, ids = None, ()  # never keep keys and values that could be taken for other tokens
        with self._changed:
            self.ids, self.kv = (tuple(ids), kv) if kv is not None else ((), None)
            self._out = max(0, self._out - 1)
            self._changed.notify_all()

    def wait_free(self, timeout: float = BUSY_WAIT_S) -> bool:
        """Waits until nobody has the cache out (e.g. a warm-up finished); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._out, timeout=timeout)

    def release(self) -> int:
        """Drops the kept cache; returns how many tokens that freed."""
        with self._changed:
            freed = self.tokens
            self.ids, self.kv = (), None
        return freed

    def _take(self) -> tuple[tuple[int, ...], Any]:
        ids, kv = self.ids, self.kv
        self.ids, self.kv = (), None
        self._out += 1
        return ids, kv


def crop_to_prefix(ids: Sequence[int], kv: Any, prompt_ids: Sequence[int], keep_last: int = 0) -> tuple[Any, int]:
    """`kv` (covering `ids`) cropped to its longest common prefix with `prompt_ids`.

    Leaves at least `keep_last` prompt tokens out. Returns (cache, tokens kept), or (None, 0)
    when nothing is left or the cache can't be cropped.
    """
    if kv is None or kv.get_seq_length() != len(ids):
        return None, 0
    keep = min(common_prefix_length(ids, prompt_ids), len(prompt_ids) - keep_last)
    if keep <= 0:
        return None, 0
    if keep < len(ids):
        if not kv.is_croppable:  # e.g. sliding-window or recurrent layers: a crop can't undo them
            return None, 0
        kv.crop(keep - len(ids))
    return kv, keep


class CachePool:
    """Bounds the prefix caches of all sessions of one engine; least recently used go first.

    Holds sessions' caches weakly: a closed tab's cache goes with its session. A cache that is
    out in a generation is not counted; it comes back (and counts) when the answer is done.

    >>> pool = CachePool(max_sessions=2, max_tokens=1000)
    >>> pool.sessions, pool.tokens
    (0, 0)
    """

    def __init__(self, max_sessions: int = MAX_CACHED_SESSIONS, max_tokens: int = MAX_CACHED_TOKENS):
        if max_sessions < 0 or max_tokens < 0:
            raise ValueError("cache limits can't be negative")
        self.max_sessions, self.max_tokens = max_sessions, max_tokens
        self._kept: OrderedDict[int, weakref.ref[PrefixCache]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def take(self, cache: PrefixCache, prompt_ids: Sequence[int], wait_s: float = BUSY_WAIT_S) -> tuple[Any, int]:
        """`cache.reuse_for(prompt_ids)`, after making sure the cache was made by this pool's model.

        Must be followed by one `keep` (with `kv=None` when the answer failed).
        """
        with self._lock:
            self._kept.pop(id(cache), None)
            if cache.pool is not self:  # first use, or a session moved to another engine
                cache.release()
                cache.pool = self
        return cache.reuse_for(prompt_ids, wait_s)

    def lend(self, cache: PrefixCache) -> tuple[tuple[int, ...], Any] | None:
        """`cache.lend()` for this pool's model: the cache as it is, or None. Give it back with `keep`."""
        with self._lock:
            if cache.pool is not self:
                return None
            self._kept.pop(id(cache), None)
        return cache.lend()

    def keep(self, cache: PrefixCache, ids: Sequence[int], kv: Any) -> None:
        """Gives `cache` back holding `kv` (covering `ids`; None: nothing) as the most recent use, then enforces the limits."""
        with self._lock:
            if cache.pool is None:
                cache.pool = self
            elif cache.pool is not self:
                kv, ids = None, ()  # taken by another engine since: `kv` would mean nothing to its model
            cache.update(ids, kv)
            self._kept.pop(id(cache), None)
            self._kept[id(cache)] = weakref.ref(cache)
            self._evict()

    @property
    def sessions(self) -> int:
        """Sessions whose cache is kept now."""
        with self._lock:
            return len(self._live())

    @property
    def tokens(self) -> int:
        """Tokens kept now, over all sessions."""
        with self._lock:
            return sum(cache.tokens for cache in self._live())

    def clear(self) -> None:
        with self._lock:
            for cache in self._live():
                cache.release()
            self._kept.clear()

    def _live(self) -> list[PrefixCache]:
        """The kept caches, oldest use first; forgets those whose session is gone or was emptied."""
        live = []
        for key, ref in list(self._kept.items()):
            cache = ref()
            if cache is None or cache.tokens == 0:
                del self._kept[key]
            else:
                live.append(cache)
        return live

    def _evict(self) -> None:
        live = self._live()
        total = sum(cache.tokens for cache in live)
        while live and (len(live) > self.max_sessions or total > self.max_tokens):
            oldest = live.pop(0)
            del self._kept[id(oldest)]
            total -= oldest.release()


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share.

    >>> common_prefix_length([1, 2, 3, 4], [1, 2, 5])
    2
    """
    n = min(len(a), len(b))
    for index in range(n):
        if a[index] != b[index]:
            return index
    return n
