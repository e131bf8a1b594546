"""Runs a service whose Nth call of one method never returns, as a call with no timeout would."""

# Usage: python -m tests.faults.hang PACKAGE.MODULE:Class.method N MODULE. The hanging call
# first writes one JSON line (`fault injected: call hangs`) to stderr, the service's log, so a
# test knows the batch is stuck in the middle.

from __future__ import annotations

import asyncio
import importlib
import json
import runpy
import sys
from collections.abc import Callable, Coroutine
from typing import Any

HANGS = "fault injected: call hangs"


def hang_on(target: str, nth: int) -> None:
    """Replaces `module:Class.method` by a wrapper whose `nth` call blocks until cancelled."""
    module_name, _, qualname = target.partition(":")
    owner_name, _, method = qualname.rpartition(".")
    owner = getattr(importlib.import_module(module_name), owner_name)
    original: Callable[..., Coroutine[Any, Any, Any]] = getattr(owner, method)
    calls = 0

    async def hanging(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth:
            line = {"event": HANGS, "target": target, "call": calls, "level": "warning"}
            print(json.dumps(line), file=sys.stderr, flush=True)
            await asyncio.Event().wait()
        return await original(*args, **kwargs)

    setattr(owner, method, hanging)


def main() -> None:
    """Installs the hang, then runs the service module as `python -m MODULE` would."""
    target, nth, module = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    hang_on(target, nth)
    sys.argv = [module]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
