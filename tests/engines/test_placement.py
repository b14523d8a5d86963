"""Where replicas run: one GPU each (round robin over those visible), or disjoint shares of the
CPU cores; and a pinned launcher puts that on every command it builds."""

from __future__ import annotations

from hearth.engines.gpu import GPU, Accelerators
from hearth.engines.placement import PinnedLauncher, Placement, plan_placements
from support.fake_launcher import FakeLauncher

NONE = Accelerators("none")
TWO_GPUS = Accelerators("nvidia", (GPU(0, "H100", 80, 80), GPU(1, "H100", 80, 80)))


def test_cpu_cores_are_split_into_disjoint_contiguous_sets() -> None:
    placements = plan_placements(3, NONE, {}, range(8))
    assert [sorted(p.cpus or ()) for p in placements] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [p.describe() for p in placements] == ["cpus 0-2", "cpus 3-5", "cpus 6-7"]
    # Only the cores this process may use (a container's cpuset), in any order.
    assert [p.cpus for p in plan_placements(2, NONE, {}, [9, 4, 7, 5])] == [
        frozenset({4, 5}),
        frozenset({7, 9}),
    ]


def test_fewer_cores_than_replicas_share_them_one_each() -> None:
    assert [p.cpus for p in plan_placements(3, NONE, {}, [0, 1])] == [
        frozenset({0}),
        frozenset({1}),
        frozenset({0}),
    ]


def test_gpus_round_robin_over_the_visible_ones() -> None:
    placements = plan_placements(3, TWO_GPUS, {}, range(8))
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in placements] == ["0", "1", "0"]
    assert all(p.cpus is None for p in placements)
    # CUDA_VISIBLE_DEVICES limits Hearth to some GPUs: its replicas use only those.
    visible = plan_placements(2, TWO_GPUS, {"CUDA_VISIBLE_DEVICES": "GPU-ab, 3"}, range(8))
    assert [p.describe() for p in visible] == ["gpu GPU-ab", "gpu 3"]


def test_one_replica_or_apple_metal_stays_unpinned() -> None:
    assert plan_placements(1, NONE, {}, range(8)) == [Placement()]
    metal = Accelerators("metal", (GPU(0, "Apple", 1, 1),))
    assert plan_placements(2, metal, {}, range(8)) == [Placement(), Placement()]


def test_a_pinned_launcher_adds_its_placement_to_each_command() -> None:
    inner = FakeLauncher()
    pinned = PinnedLauncher(inner, Placement({"CUDA_VISIBLE_DEVICES": "1"}, frozenset({2, 3})))
    command = pinned.command("127.0.0.1", 8000)
    assert command.env == {"CUDA_VISIBLE_DEVICES": "1"}
    assert command.cpus == frozenset({2, 3})
    assert command.argv == inner.commands[0].argv
    assert pinned.kind == "fake" and pinned.capabilities == inner.capabilities
    assert pinned.starts == inner.starts  # anything else is the inner launcher's
