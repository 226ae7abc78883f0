"""Deterministic French fleet data for the sandbox: vehicles, persons and GPS trips.

Everything is a pure function of a seed: the same ``generate_fleet(seed, size)``
always yields the same plates, drivers and vehicles, and the trips of a vehicle
for a calendar day depend only on (seed, plate, day), so any query window
returns the same answer every time it is asked (see ``fleet_trips``). Static
reference data (names, models, towns) lives in ``fleet_data``.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from optimum_bridge.sandbox.fleet_data import (
    DATE_FORMAT,
    FIRST_NAMES,
    JSON,
    LAST_NAMES,
    MODELS,
    PLATE_LETTERS,
    RECENT_FIRST_LETTERS,
    REGIONS,
)
from optimum_bridge.sandbox.fleet_trips import day_trips

__all__ = ["DATE_FORMAT", "Fleet", "Person", "Vehicle", "generate_fleet"]


@dataclass
class Person:
    """A person known to the fleet (a driver or another employee)."""

    id: int
    registration_number: str
    first_name: str
    last_name: str
    email: str
    is_driver: bool

    def to_json(self) -> JSON:
        """The ``/Persons`` representation."""
        return {
            "id": self.id,
            "registrationNumber": self.registration_number,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "email": self.email,
            "isDriver": self.is_driver,
        }

    def summary(self) -> JSON:
        """The short form embedded in trips (``driver``)."""
        return {
            "registrationNumber": self.registration_number,
            "firstName": self.first_name,
            "lastName": self.last_name,
        }


@dataclass
class Vehicle:
    """One vehicle of the fleet."""

    registration_number: str
    brand: str
    model: str
    fuel_type: str
    category: str
    mileage: int
    first_registration: date
    region: int = 0
    status: str = "IN_FLEET"
    driver: Person | None = None
    assignment_start: datetime = datetime(2019, 1, 1)

    def to_json(self) -> JSON:
        """The ``/Vehicles`` representation."""
        return {
            "registrationNumber": self.registration_number,
            "brand": self.brand,
            "model": self.model,
            "category": self.category,
            "status": self.status,
            "currentDriver": self.driver.to_json() if self.driver else None,
            "fuelType": self.fuel_type,
            "mileage": self.mileage,
            "firstRegistrationDate": self.first_registration.isoformat(),
        }

    def assignment(self) -> JSON:
        """The ``/VehicleAssignments/current`` representation."""
        return {
            "registrationNumber": self.registration_number,
            "driver": self.driver.to_json() if self.driver else None,
            "startDate": self.assignment_start.strftime(DATE_FORMAT),
        }


@dataclass
class Fleet:
    """A generated fleet; persons may be added at runtime (``POST /Persons``)."""

    seed: int
    vehicles: list[Vehicle]
    persons: list[Person]
    _by_plate: dict[str, Vehicle] = field(default_factory=dict, repr=False)
    _pool_drivers: list[Person] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._by_plate = {v.registration_number: v for v in self.vehicles}
        # Snapshot: persons created later must not change past trips.
        self._pool_drivers = [p for p in self.persons if p.is_driver]

    def plates(self, *, in_fleet_only: bool = False) -> list[str]:
        """Registration numbers, in generation order."""
        return [v.registration_number for v in self.vehicles if not in_fleet_only or v.status == "IN_FLEET"]

    def vehicle(self, plate: str) -> Vehicle | None:
        """The vehicle with this plate (case-insensitive), or None."""
        return self._by_plate.get(plate.strip().upper())

    def add_person(
        self,
        first_name: str,
        last_name: str,
        *,
        email: str | None = None,
        is_driver: bool = False,
    ) -> Person:
        """Create a person with the next id and a fresh employee number."""
        next_id = max((p.id for p in self.persons), default=0) + 1
        taken = {p.email.split("@")[0] for p in self.persons}
        email = email or _email(first_name, last_name, taken)
        # Generated employee numbers stay below 80000, so these never collide.
        number = f"M{80000 + next_id:05d}"
        person = Person(next_id, number, first_name, last_name, email, is_driver)
        self.persons.append(person)
        return person

    def trips(self, plate: str, start: datetime, end: datetime) -> list[JSON]:
        """Trips of one vehicle starting in ``[start, end)``; KeyError if unknown."""
        vehicle = self.vehicle(plate)
        if vehicle is None:
            raise KeyError(plate)
        if vehicle.status != "IN_FLEET":
            return []
        # DATE_FORMAT strings sort chronologically, so compare them directly.
        low, high = start.strftime(DATE_FORMAT), end.strftime(DATE_FORMAT)
        found: list[JSON] = []
        day = start.date()
        while day <= end.date():
            trips = day_trips(self.seed, vehicle, day, self._pool_drivers)
            found += [t for t in trips if low <= t["startPoint"]["date"] < high]
            day += timedelta(days=1)
        return found

    def all_trips(self, start: datetime, end: datetime) -> list[JSON]:
        """Trips of every vehicle starting in ``[start, end)``, ordered by start."""
        trips = [t for p in self.plates(in_fleet_only=True) for t in self.trips(p, start, end)]
        return sorted(trips, key=lambda t: (t["startPoint"]["date"], t["registrationNumber"]))


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in folded.lower() if c.isalnum() or c == "-")


def _email(first: str, last: str, taken: set[str]) -> str:
    local = f"{_ascii(first)}.{_ascii(last)}"
    candidate, n = local, 1
    while candidate in taken:
        n += 1
        candidate = f"{local}{n}"
    taken.add(candidate)
    return f"{candidate}@transports-durand.fr"


def _plates(seed: int, size: int) -> list[str]:
    rng = random.Random(f"{seed}:plates")
    plates: list[str] = []
    seen: set[str] = set()
    while len(plates) < size:
        left = rng.choice(RECENT_FIRST_LETTERS) + rng.choice(PLATE_LETTERS)
        right = rng.choice(PLATE_LETTERS) + rng.choice(PLATE_LETTERS)
        plate = f"{left}-{rng.randint(1, 999):03d}-{right}"
        if left not in ("SS", "WW") and right != "SS" and plate not in seen:
            seen.add(plate)
            plates.append(plate)
    return plates


def _vehicle(seed: int, plate: str) -> Vehicle:
    # Per-plate RNG: a vehicle keeps its attributes whatever the fleet size.
    rng = random.Random(f"{seed}:{plate}")
    brand, model, fuel, category = rng.choice(MODELS)
    first_registration = date(2019, 1, 1) + timedelta(days=rng.randint(0, 6 * 365))
    mileage = rng.randint(3_000, 180_000)
    vehicle = Vehicle(plate, brand, model, fuel, category, mileage, first_registration)
    vehicle.region = rng.randrange(len(REGIONS))
    vehicle.assignment_start = datetime.combine(first_registration, datetime.min.time())
    return vehicle


def _persons(rng: random.Random, drivers: int, others: int) -> list[Person]:
    numbers = sorted(rng.sample(range(1000, 80000), drivers + others))
    taken: set[str] = set()
    persons = []
    for index, number in enumerate(numbers):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = _email(first, last, taken)
        persons.append(Person(index + 1, f"M{number:05d}", first, last, email, index < drivers))
    return persons


def generate_fleet(seed: int = 42, size: int = 60) -> Fleet:
    """Build the fleet: ~10% OUT_FLEET, ~80% with a current driver."""
    if size < 0:
        raise ValueError("fleet size must be >= 0")
    rng = random.Random(f"{seed}:fleet:{size}")
    vehicles = [_vehicle(seed, plate) for plate in _plates(seed, size)]
    out_count = round(size * 0.1)
    for vehicle in rng.sample(vehicles, out_count):
        vehicle.status = "OUT_FLEET"
    in_fleet = [v for v in vehicles if v.status == "IN_FLEET"]
    assigned = rng.sample(in_fleet, min(len(in_fleet), round(size * 0.8)))
    persons = _persons(rng, len(assigned) + max(1, size // 20), max(2, size // 20))
    shuffled_drivers = rng.sample(persons[: len(assigned)], len(assigned))
    for vehicle, driver in zip(assigned, shuffled_drivers, strict=True):
        vehicle.driver = driver
        vehicle.assignment_start = datetime(2023, 1, 2, 8, 0) + timedelta(
            days=rng.randint(0, 900), minutes=rng.randint(0, 600)
        )
    return Fleet(seed, vehicles, persons)
