"""The fight tracker: when repairing an object again would only feed a revert war."""

from __future__ import annotations

from baseline_operator.fights import FightSettings, FightTracker

KEY = ("NetworkPolicy", "team-a", "baseline-default-deny")
SETTINGS = FightSettings(max_repairs=3, window=60, initial_backoff=60, max_backoff=240)


def test_repairs_spread_out_in_time_are_no_fight() -> None:
    tracker = FightTracker(SETTINGS)
    for minute in range(10):
        assert tracker.repaired(KEY, minute * 61.0, "kubectl-edit") is None
    assert tracker.fight(KEY, 700.0) is None


def test_the_third_repair_within_the_window_pauses_repairs_and_names_the_other_writer() -> None:
    tracker = FightTracker(SETTINGS)
    assert tracker.repaired(KEY, 0.0, "argocd-controller") is None
    assert tracker.repaired(KEY, 10.0, "argocd-controller") is None
    fight = tracker.repaired(KEY, 20.0, "argocd-controller")
    assert fight is not None
    assert fight.other_writer == "argocd-controller"
    assert fight.paused_until == 80.0
    assert fight.paused(79.9)
    assert not fight.paused(80.0)
    assert tracker.fight(KEY, 50.0) == fight


def test_after_the_pause_one_repair_is_tried_and_a_second_one_doubles_the_pause() -> None:
    tracker = FightTracker(SETTINGS)
    for second in (0.0, 1.0, 2.0):
        tracker.repaired(KEY, second, "script")
    assert tracker.repaired(KEY, 63.0, "script") is None  # the one try after the 60 s pause
    again = tracker.repaired(KEY, 64.0, "script")
    assert again is not None
    assert again.backoff == 120.0
    assert again.paused_until == 184.0
    for second in (185.0, 186.0):
        last = tracker.repaired(KEY, second, "script")
    assert last is not None
    assert last.backoff == 240.0  # capped at max_backoff
    for second in (427.0, 428.0):
        last = tracker.repaired(KEY, second, "script")
    assert last is not None
    assert last.backoff == 240.0


def test_a_fight_ends_when_the_object_stays_repaired_for_a_window_and_is_forgiven_later() -> None:
    tracker = FightTracker(SETTINGS)
    for second in (0.0, 1.0, 2.0):
        tracker.repaired(KEY, second, "script")
    assert tracker.repaired(KEY, 63.0, "script") is None
    assert tracker.fight(KEY, 100.0) is not None  # on probation for a window after the last repair
    assert tracker.fight(KEY, 124.0) is None
    assert list(tracker.fights(124.0)) == []
    # Quiet for longer than the longest back-off: the next fight starts from the first pause again.
    for second in (400.0, 401.0):
        assert tracker.repaired(KEY, second, "script") is None
    fight = tracker.repaired(KEY, 402.0, "script")
    assert fight is not None
    assert fight.backoff == 60.0


def test_objects_are_tracked_separately_and_forgotten_with_their_namespace_or_when_quiet() -> None:
    tracker = FightTracker(SETTINGS)
    other = ("ResourceQuota", "team-b", "baseline-quota")
    for second in (0.0, 1.0, 2.0):
        tracker.repaired(KEY, second, "script")
    tracker.repaired(other, 2.0, None)
    assert tracker.fight(other, 3.0) is None
    assert [fight.key for fight in tracker.fights(3.0)] == [KEY]
    tracker.forget_namespace("team-a")
    assert tracker.fight(KEY, 3.0) is None
    assert len(tracker) == 1
    tracker.sweep(1000.0)
    assert len(tracker) == 0


def test_the_other_writer_is_kept_when_a_later_repair_cannot_name_one() -> None:
    tracker = FightTracker(SETTINGS)
    tracker.repaired(KEY, 0.0, "kubectl-edit")
    tracker.repaired(KEY, 1.0, None)  # a deletion: the API does not say who deleted
    fight = tracker.repaired(KEY, 2.0, None)
    assert fight is not None
    assert fight.other_writer == "kubectl-edit"
