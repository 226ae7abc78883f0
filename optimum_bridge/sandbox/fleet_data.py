"""Static French reference data for the generated fleet: names, models, streets, towns."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"  # the API's dates: no milliseconds, no timezone
Town = tuple[str, str, float, float]  # name, postcode, latitude, longitude

# SIV plates never use I, O or U; "SS" is banned everywhere and "WW" on the left
# (it marks temporary registrations). Fleet cars are recent, hence E/F/G first.
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTVWXYZ"
RECENT_FIRST_LETTERS = "EFG"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _words(
    "Jean Pierre Michel Philippe Alain Nicolas Christophe Laurent Julien Sébastien "
    "Thomas Antoine Mathieu Olivier Frédéric Stéphane Maxime Guillaume Hugo Lucas "
    "Marie Nathalie Isabelle Sylvie Catherine Sophie Céline Julie Aurélie Camille "
    "Émilie Sandrine Valérie Léa Chloé Manon Élodie Pauline Hélène Françoise"
)
LAST_NAMES = _words(
    "Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon "
    "Laurent Lefèvre Michel Garcia David Bertrand Roux Vincent Fournier Morel "
    "Girard André Lefebvre Mercier Dupont Lambert Bonnet François Martinez Legrand "
    "Garnier Faure Rousseau Blanc Guérin Muller Henry Roussel Nicolas Perrin "
    "Morin Mathieu Clément Gauthier Dumont Lopez Fontaine Chevalier Robin"
)
MODELS = (
    ("Renault", "Clio", "GASOLINE", "VP"),
    ("Renault", "Mégane E-Tech", "ELECTRIC", "VP"),
    ("Renault", "Kangoo", "DIESEL", "VU"),
    ("Renault", "Trafic", "DIESEL", "VU"),
    ("Peugeot", "208", "GASOLINE", "VP"),
    ("Peugeot", "e-208", "ELECTRIC", "VP"),
    ("Peugeot", "308", "DIESEL", "VP"),
    ("Peugeot", "Partner", "DIESEL", "VU"),
    ("Citroën", "C3", "GASOLINE", "VP"),
    ("Citroën", "Berlingo", "DIESEL", "VU"),
    ("Dacia", "Sandero", "GASOLINE", "VP"),
    ("Toyota", "Yaris", "HYBRID", "VP"),
    ("Tesla", "Model 3", "ELECTRIC", "VP"),
)
STREETS = (
    "rue de la République",
    "avenue Jean Jaurès",
    "boulevard Victor Hugo",
    "rue Pasteur",
    "place du Général de Gaulle",
    "rue Nationale",
    "avenue de la Gare",
    "rue des Écoles",
    "boulevard Gambetta",
    "rue du Moulin",
    "zone industrielle des Garennes",
    "rue Émile Zola",
)
# (town, postcode, latitude, longitude), grouped by depot region.
REGIONS: tuple[tuple[Town, ...], ...] = (
    (
        ("Paris", "75011", 48.8566, 2.3522),
        ("Versailles", "78000", 48.8049, 2.1204),
        ("Nanterre", "92000", 48.8924, 2.2071),
        ("Créteil", "94000", 48.7904, 2.4556),
        ("Saint-Denis", "93200", 48.9362, 2.3574),
        ("Évry-Courcouronnes", "91000", 48.6290, 2.4410),
        ("Meaux", "77100", 48.9601, 2.8788),
        ("Argenteuil", "95100", 48.9472, 2.2467),
    ),
    (
        ("Lyon", "69003", 45.7640, 4.8357),
        ("Villeurbanne", "69100", 45.7719, 4.8902),
        ("Vienne", "38200", 45.5255, 4.8745),
        ("Bourgoin-Jallieu", "38300", 45.5866, 5.2736),
        ("Saint-Étienne", "42000", 45.4397, 4.3872),
        ("Villefranche-sur-Saône", "69400", 45.9896, 4.7189),
    ),
    (
        ("Lille", "59000", 50.6292, 3.0573),
        ("Roubaix", "59100", 50.6942, 3.1746),
        ("Tourcoing", "59200", 50.7239, 3.1612),
        ("Lens", "62300", 50.4322, 2.8333),
        ("Arras", "62000", 50.2910, 2.7775),
        ("Douai", "59500", 50.3714, 3.0800),
    ),
    (
        ("Marseille", "13008", 43.2965, 5.3698),
        ("Aix-en-Provence", "13100", 43.5297, 5.4474),
        ("Aubagne", "13400", 43.2927, 5.5708),
        ("Toulon", "83000", 43.1242, 5.9280),
        ("Martigues", "13500", 43.4053, 5.0476),
    ),
    (
        ("Bordeaux", "33000", 44.8378, -0.5792),
        ("Mérignac", "33700", 44.8386, -0.6436),
        ("Pessac", "33600", 44.8067, -0.6311),
        ("Libourne", "33500", 44.9153, -0.2439),
        ("Arcachon", "33120", 44.6586, -1.1689),
    ),
    (
        ("Toulouse", "31000", 43.6047, 1.4442),
        ("Blagnac", "31700", 43.6364, 1.3906),
        ("Colomiers", "31770", 43.6112, 1.3350),
        ("Montauban", "82000", 44.0176, 1.3550),
        ("Albi", "81000", 43.9289, 2.1464),
    ),
    (
        ("Nantes", "44000", 47.2184, -1.5536),
        ("Saint-Nazaire", "44600", 47.2735, -2.2138),
        ("Rezé", "44400", 47.1808, -1.5497),
        ("Angers", "49000", 47.4784, -0.5632),
    ),
)
