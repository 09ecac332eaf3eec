"""Fails on import, like a plugin built against a runtime that is not there."""

raise RuntimeError("acceleron-broken always fails to import (this is its purpose)")
