"""How runs RUN: workers that claim, execute, heartbeat and recover runs."""
