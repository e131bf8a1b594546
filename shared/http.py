"""HTTP pieces every service serves: liveness, readiness, JSON errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def health_routes(service: str, readiness: ReadinessCheck) -> list[Route]:
    """`/healthz` answers while the process lives; `/readyz` only when its dependencies do."""

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"service": service, "status": "alive"})

    async def readyz(_: Request) -> JSONResponse:
        checks = await readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"service": service, "ready": ready, "checks": checks},
            status_code=200 if ready else 503,
        )

    return [Route("/healthz", healthz), Route("/readyz", readyz)]


def error(status: int, reason: str, detail: str, **extra: object) -> JSONResponse:
    """A JSON error body with a machine-readable reason and a sentence for people."""
    return JSONResponse({"reason": reason, "detail": detail, **extra}, status_code=status)
