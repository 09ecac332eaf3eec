"""Importing this module hangs (a plugin that reaches for the network or a lock at import time)."""

import time

time.sleep(120)
