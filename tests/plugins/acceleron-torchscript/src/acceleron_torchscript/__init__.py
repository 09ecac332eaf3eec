"""A third-party-style acceleron plugin used by acceleron's own tests (TorchScript traces)."""
