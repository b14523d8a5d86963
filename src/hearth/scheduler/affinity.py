"""Which replica of a model a request goes to: the one whose engine cache holds the longest
prefix of its prompt, unless that one is so much busier that another replica would answer
sooner even after evaluating the whole prompt, or has no free slot while another has; with no
prefix held anywhere, the least busy.

A prompt arrives as its prefix fingerprint, the cumulative hashes of fixed-size chunks (routing
computes them), so a prefix shared by two prompts is a run of equal hashes. "Busy" is counted in
the same unit: a replica's backlog is the chunks its requests in flight had to evaluate (what
their replica did not hold), plus one per request. A request goes where backlog + the chunks it
would evaluate there is smallest: a conversation stays with its replica unless the queue there
outweighs re-reading its prompt elsewhere.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

# Chunk hashes remembered per model: at 256 characters a chunk, about 4 M characters of prompts.
PREFIX_TABLE_SIZE = 16384
# What a request costs besides the chunks it evaluates (generating, its turn in the batch).
REQUEST_COST = 1

Reason = Literal["single", "prefix", "busy", "least_busy", "round_robin"]


@dataclass(frozen=True)
class ReplicaLoad:
    """What the choice looks at in one replica."""

    index: int
    in_flight: int  # requests holding it: decoding or queued for one of its slots
    backlog: int  # the work of those requests, in chunks (see the module docstring)
    ready: bool  # its engine is up (not loading or restarting)
    free: bool = True  # a slot is free and nobody is queued: a request starts at once


@dataclass(frozen=True)
class Choice:
    replica: int
    reason: Reason
    matched: int = 0  # chunks of the prompt's prefix the chosen replica served last
    work: int = REQUEST_COST  # what this request adds to the replica's backlog


class PrefixTable:
    """Chunk hash -> the replicas that have served a prompt with that prefix (a bit each),
    least recently used chunks forgotten first."""

    def __init__(self, capacity: int = PREFIX_TABLE_SIZE) -> None:
        self.capacity = capacity
        self._holders: OrderedDict[bytes, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._holders)

    def matches(self, prefix: Sequence[bytes], live: Collection[int]) -> dict[int, int]:
        """For each live replica holding part of the prefix, how many chunks it holds. Each hash
        stands for the whole prefix up to its chunk, so a replica's last hit is its longest."""
        found: dict[int, int] = {}
        wanted = sum(1 << index for index in live)
        for length in range(len(prefix), 0, -1):
            holders = self._holders.get(prefix[length - 1], 0) & wanted
            if holders:
                for index in live:
                    if holders >> index & 1:
                        found[index] = length
                wanted &= ~holders
                if not wanted:
                    break
        return found

    def record(self, prefix: Sequence[bytes], replica: int) -> None:
        for chunk in prefix:
            self._holders[chunk] = self._holders.get(chunk, 0) | 1 << replica
            self._holders.move_to_end(chunk)
        while len(self._holders) > self.capacity:
            self._holders.popitem(last=False)

    def forget(self, replica: int) -> None:
        """A replica stopped: its cache is gone."""
        bit = 1 << replica
        for chunk in [c for c, holders in self._holders.items() if holders & bit]:
            if self._holders[chunk] == bit:
                del self._holders[chunk]
            else:
                self._holders[chunk] &= ~bit


def choose(
    loads: Sequence[ReplicaLoad],
    table: PrefixTable,
    prefix: Sequence[bytes],
    turn: int,
    routing: str = "affinity",
) -> Choice:
    """The replica for one request (records its prefix there). Replicas whose engine is not
    ready are chosen only when none is: a restarting or loading one would keep it waiting.
    A replica with a free slot goes before one without (a request queued in Hearth waits for a
    whole answer, however long, to end); ties go to the fewest in flight, then round robin from
    `turn`."""
    ready = [r for r in loads if r.ready] or list(loads)
    if len(loads) == 1:
        return Choice(loads[0].index, "single")
    span = max(r.index for r in loads) + 1
    if routing == "round_robin":
        return Choice(ready[turn % len(ready)].index, "round_robin")
    held = table.matches(prefix, [r.index for r in ready])

    def cost(r: ReplicaLoad) -> tuple[bool, int, int, int]:
        evaluate = len(prefix) - held.get(r.index, 0)
        return not r.free, r.backlog + evaluate, r.in_flight, (r.index - turn) % span

    best = min(ready, key=cost)
    mine, longest = held.get(best.index, 0), max(held.values(), default=0)
    reason: Reason = "least_busy" if not longest else "prefix" if mine == longest else "busy"
    table.record(prefix, best.index)
    return Choice(best.index, reason, mine, len(prefix) - mine + REQUEST_COST)
