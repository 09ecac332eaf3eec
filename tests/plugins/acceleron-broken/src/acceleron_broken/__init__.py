"""A deliberately broken acceleron plugin, used by acceleron's tests."""
