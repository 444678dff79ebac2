"""A workflow whose stored values hold terminal escape sequences, for the CLI's tests of
what it prints: its step's name and its error message (so the traceback too)."""

from __future__ import annotations

from durableflow import Flow, FlowContext

flow = Flow()

# An OSC that retitles the terminal, an ESC [ that clears it, a C1 CSI (0x9b) that
# recolours: printed raw, each would be obeyed by the operator's terminal.
ESCAPES = "\x1b]0;pwned\x07 \x1b[2J \x9b31m"


@flow.step(name="explode\x1b[41m")
async def explode(ctx: FlowContext, value: int) -> int:
    raise ValueError(f"bad value {value}: {ESCAPES}")


@flow.workflow(name="hostile.fails", version=1)
async def fails(ctx: FlowContext, value: int) -> int:
    return await explode(ctx, value)
