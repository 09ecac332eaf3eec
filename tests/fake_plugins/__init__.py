"""Plugin modules the unit tests point fake entry points at."""
