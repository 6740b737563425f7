"""The one token bucket: the broker's per-session and unregistered limits, the bot's answers.

Pure: the time is passed in. ``penalty`` counts refusals and drains at the
same rate as tokens refill, so a peer that keeps sending while refused is
told apart from one that only bursted once.
"""

from __future__ import annotations


class TokenBucket:
    """``burst`` at once, then ``rate`` per second; ``rate`` <= 0 never refuses."""

    __slots__ = ("burst", "penalty", "rate", "refilled", "tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.penalty = 0.0
        #: None until first used: the first take finds a full bucket whatever its time.
        self.refilled = now

    def refill(self, now: float) -> None:
        if self.refilled is not None:
            elapsed = now - self.refilled
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.penalty = max(0.0, self.penalty - elapsed * self.rate)
        self.refilled = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens; False (and one more penalty point) if there are too few."""
        if self.rate <= 0:
            return True
        self.refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        self.penalty += 1
        return False
