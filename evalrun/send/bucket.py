"""A continuously refilled token bucket: the pacer's (`evalrun.send.limits`) and the simulator's
rate limits (`evalrun.sim.ratelimit`) are the same arithmetic, so they share this class."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TokenBucket"]


@dataclass
class TokenBucket:
    """`rate` units per second flow in, up to `capacity`. `level` may go below zero after a
    `charge` for more than was there (the simulator charges output tokens after the fact)."""

    rate: float
    capacity: float
    level: float
    updated: float

    @classmethod
    def full(cls, rate: float, capacity: float, now: float) -> TokenBucket:
        """A bucket that starts full."""
        return cls(rate=rate, capacity=capacity, level=capacity, updated=now)

    def refill(self, now: float) -> None:
        """Add what flowed in since the last update."""
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` is available (0 if now). A request larger than the bucket
        waits for a full one; a bucket that does not refill never has it (inf)."""
        self.refill(now)
        amount = min(amount, self.capacity)
        if self.level >= amount:
            return 0.0
        return (amount - self.level) / self.rate if self.rate > 0 else math.inf

    def take(self, amount: float, now: float) -> None:
        """Reserve `amount`, at most a full bucket's worth (what `wait_for` waited for)."""
        self.refill(now)
        self.level -= min(amount, self.capacity)

    def charge(self, amount: float, now: float) -> None:
        """Charge `amount` in full, even below zero (usage that is known only afterwards)."""
        self.refill(now)
        self.level -= amount

    def give_back(self, amount: float, now: float) -> None:
        """Return what a reservation did not use."""
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)

    def seconds_to_full(self) -> float:
        """Seconds until the bucket is full again (from its last update)."""
        return max(0.0, (self.capacity - self.level) / self.rate) if self.rate > 0 else math.inf
