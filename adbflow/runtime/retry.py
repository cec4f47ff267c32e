"""How many attempts a stage gets and how long to pause between them.

Why an object: the rule was inline in the attempt loop (`retry_wait_s * 2**n` for origin
pulls, flat otherwise, capped at 10 s); as a value it can be printed, tested and handed to
the attempt loop, and a future stage (cascades, split runs) picks its own without touching
the loop.
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_PAUSE_S = 10.0


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` per stage in total (over restarts too: failed attempts in the journal
    count). `backoff`: the pause doubles after each failure; used for stages bound to one
    device (the picture's origin), where re-bidding elsewhere is impossible and a flapping
    connection needs time. Other stages move to another device, so a flat pause will do."""

    attempts: int = 3
    pause_s: float = 1.0
    backoff: bool = False
    max_pause_s: float = MAX_PAUSE_S

    def budget(self, failed_before: int) -> int:
        """Attempts left when `failed_before` attempts of the stage already failed."""
        return max(0, self.attempts - failed_before)

    def pause_after(self, n: int) -> float:
        """Seconds to wait after the failed attempt `n` (0-based within this run)."""
        wait = self.pause_s * (2 ** n if self.backoff else 1)
        return min(wait, self.max_pause_s)

    def with_backoff(self, backoff: bool) -> RetryPolicy:
        return RetryPolicy(self.attempts, self.pause_s, backoff, self.max_pause_s)
