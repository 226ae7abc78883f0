"""GPS trips of the generated fleet: a pure function of (seed, vehicle, calendar day).

A vehicle leaves its depot town in the morning, chains a few legs between towns
of its region (local errands when a leg stays in one town) and returns to the
depot; weekends are quiet. The per-day RNG is seeded from the seed, the plate and
the date, so every query for that day sees the same trips.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from optimum_bridge.sandbox.fleet_data import DATE_FORMAT, JSON, REGIONS, STREETS, Town

if TYPE_CHECKING:
    from optimum_bridge.sandbox.fleet import Person, Vehicle

_WEEKDAY_COUNTS = (2, 3, 3, 4, 5)
_WEEKEND_COUNTS = (0, 0, 0, 1, 2)
_LAST_DEPARTURE_HOUR = 20


def day_trips(seed: int, vehicle: Vehicle, day: date, pool_drivers: Sequence[Person]) -> list[JSON]:
    """The trips of ``vehicle`` on ``day``: a chain of legs from and back to its depot."""
    rng = random.Random(f"{seed}:{vehicle.registration_number}:{day.isoformat()}")
    count = rng.choice(_WEEKDAY_COUNTS if day.weekday() < 5 else _WEEKEND_COUNTS)
    towns = REGIONS[vehicle.region]
    clock = datetime.combine(day, datetime.min.time()) + timedelta(minutes=rng.randint(390, 540))
    here = towns[0]
    trips: list[JSON] = []
    for index in range(count):
        last = index == count - 1
        there = towns[0] if last else rng.choice(towns)
        driver = vehicle.driver or (rng.choice(pool_drivers) if pool_drivers else None)
        trip_id = _trip_id(seed, vehicle.registration_number, day, index)
        trip = {"id": trip_id, **_trip(rng, vehicle, (here, there), clock, driver)}
        trips.append(trip)
        clock += timedelta(seconds=trip["duration"] + rng.randint(900, 9000))
        here = there
        if clock.hour >= _LAST_DEPARTURE_HOUR or clock.date() != day:
            break
    return trips


def _trip(
    rng: random.Random,
    vehicle: Vehicle,
    legs: tuple[Town, Town],
    start: datetime,
    driver: Person | None,
) -> JSON:
    origin, destination = legs
    if origin == destination:
        distance, speed = rng.uniform(2.0, 15.0), rng.uniform(22.0, 38.0)
    else:
        distance = _haversine_km(origin, destination) * rng.uniform(1.2, 1.4)
        speed = rng.uniform(55.0, 85.0)
    duration = int(distance / speed * 3600) + rng.randint(60, 600)
    end = start + timedelta(seconds=duration)
    return {
        "registrationNumber": vehicle.registration_number,
        "driver": driver.summary() if driver else None,
        "startPoint": _point(rng, origin, start),
        "endPoint": _point(rng, destination, end),
        "distance": round(distance, 1),
        "duration": duration,
        "drivingTime": int(duration * rng.uniform(0.82, 0.97)),
    }


def _point(rng: random.Random, town: Town, when: datetime) -> JSON:
    name, postcode, lat, lon = town
    street = f"{rng.randint(1, 180)} {rng.choice(STREETS)}"
    return {
        "date": when.strftime(DATE_FORMAT),
        "latitude": round(lat + rng.uniform(-0.02, 0.02), 6),
        "longitude": round(lon + rng.uniform(-0.02, 0.02), 6),
        "address": f"{street}, {postcode} {name}, France",
    }


def _haversine_km(a: Town, b: Town) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a[2], a[3], b[2], b[3]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def _trip_id(seed: int, plate: str, day: date, index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{plate}:{day.isoformat()}:{index}".encode()).hexdigest()
    return int(digest[:12], 16) % 10**10
