from baseline_operator.observed import ObservedObject
from baseline_operator.recent_writes import RecentWrites


def quota(rv: str, uid: str = "u1", pods: str = "1") -> ObservedObject:
    return ObservedObject.from_body(
        "ResourceQuota", "a", "baseline-quota", uid, {"spec": {"hard": {"pods": pods}}}, resource_version=rv
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_our_write_shows_until_the_watch_delivers_it() -> None:
    recent = RecentWrites()
    recent.wrote(("ResourceQuota", "a", "baseline-quota"), quota("10", pods="5"))
    assert recent.objects("a", []) == [quota("10", pods="5")]  # the watch has nothing yet
    assert recent.objects("a", [quota("9")]) == [quota("10", pods="5")]  # the watch is behind
    assert recent.objects("a", [quota("10", pods="5")]) == [quota("10", pods="5")]
    assert len(recent) == 0  # caught up: the cache rules again
    assert recent.objects("a", [quota("11", pods="7")]) == [quota("11", pods="7")]


def test_a_deletion_hides_the_object_until_the_watch_drops_it() -> None:
    recent = RecentWrites()
    recent.deleted(("ResourceQuota", "a", "baseline-quota"), "u1")
    assert recent.objects("a", [quota("10")]) == []
    assert recent.objects("a", [quota("12", uid="u2")]) == [quota("12", uid="u2")]  # re-created since
    assert len(recent) == 0


def test_entries_expire() -> None:
    clock = Clock()
    recent = RecentWrites(clock)
    recent.wrote(("ResourceQuota", "a", "baseline-quota"), quota("10"))
    clock.now = 31
    assert recent.objects("a", []) == []
    assert len(recent) == 0


def test_one_object_of_someone_else_is_overlaid_too() -> None:
    recent = RecentWrites()
    written = ObservedObject.from_body(
        "ServiceAccount", "a", "default", "sa", {"automountServiceAccountToken": False}, resource_version="5"
    )
    cached = ObservedObject.from_body("ServiceAccount", "a", "default", "sa", {}, resource_version="4")
    recent.wrote(("ServiceAccount", "a", "default"), written)
    assert recent.one(("ServiceAccount", "a", "default"), cached) is written
    assert recent.objects("a", []) == []  # the ServiceAccount is not one of the namespace's managed objects


def test_only_the_exact_echo_of_our_last_write_is_an_echo_and_it_is_heard_once() -> None:
    recent = RecentWrites()
    key = ("ResourceQuota", "a", "baseline-quota")
    recent.wrote(key, quota("5"))
    assert not recent.echo(key, "u1", "4")  # an older event, still in flight
    assert not recent.echo(key, "u2", "5")  # another object under the name
    assert recent.echo(key, "u1", "5")
    assert not recent.echo(key, "u1", "5")  # forgotten: the cache holds it now
    assert len(recent) == 0
    recent.deleted(key, "u1")
    assert not recent.echo(key, "u1", "5")  # a deletion's echo is a DELETED event, never an update


def test_the_record_of_our_write_is_handed_out_only_for_its_very_version() -> None:
    recent = RecentWrites()
    key = ("ResourceQuota", "a", "baseline-quota")
    written = quota("5")
    recent.wrote(key, written)
    assert recent.written(key, "u1", "5") is written
    assert recent.written(key, "u1", "6") is None  # a later change: someone else's, to be observed
    assert recent.written(key, "u2", "5") is None  # another object of the same name
    assert recent.written(("ResourceQuota", "b", "baseline-quota"), "u1", "5") is None
    recent.deleted(key, "u1")
    assert recent.written(key, "u1", "5") is None
