"""Choosing a replica: the longest prefix wins unless its backlog outweighs re-reading the prompt
elsewhere, no match goes to the least busy (round robin among equals), and the prefix table stays
bounded."""

from __future__ import annotations

from hearth.scheduler.affinity import REQUEST_COST, PrefixTable, ReplicaLoad, choose

DOC = [b"d1", b"d2", b"d3"]
CONVERSATION = [*DOC, b"c1", b"c2"]


def load(
    index: int, backlog: int = 0, in_flight: int = 0, ready: bool = True, free: bool = True
) -> ReplicaLoad:
    return ReplicaLoad(index, in_flight, backlog, ready, free)


def test_the_replica_with_the_longest_prefix_wins() -> None:
    table = PrefixTable()
    table.record(DOC, 0)  # replica 0 served the document alone
    table.record(CONVERSATION[:4], 1)  # replica 1 the document and a turn after it
    prompt = [*CONVERSATION, b"c3"]
    assert table.matches(prompt, [0, 1]) == {0: 3, 1: 4}
    choice = choose([load(0), load(1, in_flight=3)], table, prompt, turn=0)
    assert (choice.replica, choice.reason, choice.matched) == (1, "prefix", 4)
    assert choice.work == 2 + REQUEST_COST  # the two chunks it has to evaluate
    assert table.matches(prompt, [0, 1]) == {0: 3, 1: 6}  # remembered


def test_a_busy_holder_keeps_its_request_until_its_backlog_outweighs_the_prompt() -> None:
    table = PrefixTable()
    table.record(CONVERSATION, 0)
    # Elsewhere the 5 chunks would all be evaluated: worth it only past a backlog of 5.
    stays = choose([load(0, backlog=4), load(1)], table, CONVERSATION, turn=0)
    assert (stays.replica, stays.reason, stays.matched) == (0, "prefix", 5)
    moved = choose([load(0, backlog=6), load(1)], table, CONVERSATION, turn=0)
    assert (moved.replica, moved.reason, moved.matched) == (1, "busy", 0)
    assert moved.work == 5 + REQUEST_COST
    assert table.matches(CONVERSATION, [0, 1]) == {0: 5, 1: 5}  # both hold it now

    # Its slots all taken while another has one free: it would wait for a whole answer to end.
    table = PrefixTable()
    table.record(CONVERSATION, 0)
    full = choose([load(0, free=False), load(1, backlog=9)], table, CONVERSATION, turn=0)
    assert (full.replica, full.reason) == (1, "busy")
    both_full = [load(0, backlog=0, free=False), load(1, backlog=2, free=False)]
    assert choose(both_full, table, CONVERSATION, turn=1).replica == 0  # then the cost decides


def test_without_a_match_the_least_busy_then_fewest_in_flight_then_round_robin() -> None:
    table = PrefixTable()
    assert choose([load(0, 3), load(1, 2)], table, [b"x"], turn=0).replica == 1
    assert choose([load(0, 2, in_flight=2), load(1, 2, in_flight=1)], table, [], 0).replica == 1
    picks = [choose([load(0), load(1)], table, [], turn=t) for t in range(4)]
    assert [p.replica for p in picks] == [0, 1, 0, 1]
    assert {p.reason for p in picks} == {"least_busy"}


def test_conversations_sharing_a_document_spread_over_the_replicas() -> None:
    """Arriving together, with one document then a question each: the second would queue
    behind the first's whole prompt on replica 0, so it reads the document on replica 1; from
    then on both hold the document and the conversations alternate."""
    table = PrefixTable()
    backlog = {0: 0, 1: 0}
    chosen = []
    for conversation in range(4):
        prompt = [*DOC, f"q{conversation}".encode()]
        choice = choose([load(i, backlog[i]) for i in (0, 1)], table, prompt, turn=conversation)
        backlog[choice.replica] += choice.work
        chosen.append((choice.replica, choice.reason))
    assert chosen == [(0, "least_busy"), (1, "busy"), (0, "prefix"), (1, "prefix")]


def test_a_replica_that_is_not_ready_is_skipped_while_another_is() -> None:
    table = PrefixTable()
    table.record(DOC, 1)
    loading = load(1, ready=False)
    assert choose([load(0, backlog=50), loading], table, DOC, turn=1).replica == 0
    fresh = PrefixTable()
    fresh.record(DOC, 1)
    starting = [load(0, ready=False), load(1, ready=False)]
    assert choose(starting, fresh, DOC, turn=0).replica == 1  # none ready: all may be chosen


def test_round_robin_and_single() -> None:
    table = PrefixTable()
    table.record(DOC, 0)
    picks = [choose([load(0), load(1)], table, DOC, t, "round_robin") for t in range(3)]
    assert [p.replica for p in picks] == [0, 1, 0]  # the prefix is not looked at
    assert {p.reason for p in picks} == {"round_robin"}
    assert choose([load(0, backlog=9)], table, DOC, turn=5).reason == "single"


def test_the_table_is_bounded_and_forgets_a_stopped_replica() -> None:
    table = PrefixTable(capacity=4)
    table.record([b"a1", b"a2"], 0)
    table.record([b"b1", b"b2"], 1)
    table.record([b"c1", b"c2"], 0)
    table.record([b"c1", b"c2"], 1)
    assert len(table) == 4
    assert table.matches([b"a1", b"a2"], [0, 1]) == {}  # the oldest went first
    assert table.matches([b"b1", b"b2", b"b3"], [0, 1]) == {1: 2}
    assert table.matches([b"b1", b"b2"], [0]) == {}  # replica 1 is not running
    table.forget(1)
    assert len(table) == 2
    assert table.matches([b"c1", b"c2"], [0, 1]) == {0: 2}
