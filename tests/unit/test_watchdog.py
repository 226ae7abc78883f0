"""The consumer watchdog's judgement, on a clock the test moves (the worker-level test is in tests/faults)."""

from __future__ import annotations

from optimum_bridge.process.watchdog import ConsumerWatchdog


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t


def watchdog(room: list[bool]) -> tuple[ConsumerWatchdog, Clock, list[str]]:
    clock, fired = Clock(), []
    dog = ConsumerWatchdog(fired.append, limit_s=20, clock=clock)  # type: ignore[arg-type]
    dog.connected(lambda: room[0])
    return dog, clock, fired


def test_a_consumer_that_hears_from_the_broker_is_never_stuck():
    dog, clock, fired = watchdog([True])
    for _ in range(100):
        clock.t += 1
        dog.beat()
        assert not dog.check()
    assert fired == []


def test_silence_with_room_for_a_message_fires_once():
    dog, clock, fired = watchdog([True])
    clock.t += 19.9
    assert not dog.check()
    clock.t += 0.2
    assert dog.check() and not dog.check()
    assert len(fired) == 1 and "no answer from the broker for 20s" in fired[0]


def test_every_slot_busy_or_a_lost_connection_is_not_stuck():
    room = [False]
    dog, clock, fired = watchdog(room)
    clock.t += 100
    assert not dog.check()  # busy: no BRPOP is due
    room[0] = True
    clock.t += 10
    assert not dog.check()  # the silence counts from the last busy moment
    dog.disconnected()
    clock.t += 100
    assert not dog.check()  # reconnecting: kombu's and Celery's to handle
    dog.connected(lambda: True)
    clock.t += 19
    assert not dog.check() and fired == []
