"""The gallery's HTTP routes: pages, images, live state, and the review actions.

Every request must name a loopback host (no DNS rebinding); actions must also come from a loopback
client with the session's token, and run the same library functions as the commands.
"""

from __future__ import annotations

import secrets
from typing import Any

LOOPBACK_CLIENTS = {"127.0.0.1", "::1", "localhost", "testclient"}


def _host_ok(request) -> bool:
    from starbuild.ui.gallery import LOOPBACK_HOSTS

    host = request.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in LOOPBACK_HOSTS


def routes(gallery):
    """A Starlette app over a Gallery."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
    from starlette.routing import Route

    state = gallery.state

    async def loopback_only(request, call_next):
        if not _host_ok(request):
            return PlainTextResponse("the gallery answers on 127.0.0.1 only", status_code=403)
        return await call_next(request)

    async def index(request):
        return HTMLResponse(await run_in_threadpool(gallery.index))

    async def asset(request):
        page = await run_in_threadpool(gallery.asset, request.path_params["name"])
        return HTMLResponse(page) if page else PlainTextResponse("no such asset", status_code=404)

    def _file(path):
        return FileResponse(path) if path else PlainTextResponse("not found", status_code=404)

    async def file(request):
        return _file(gallery.file_path(request.path_params["version"], request.path_params["path"]))

    async def obj(request):
        path = await run_in_threadpool(gallery.object_path, request.path_params["sha"])
        return FileResponse(path, media_type=_sniff(path)) if path else PlainTextResponse("not found", 404)

    async def thumb(request):
        path = await run_in_threadpool(gallery.thumbnail, request.path_params["version"], request.path_params["path"])
        if path is None:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, headers={"Cache-Control": "max-age=31536000, immutable"})

    async def api_state(request):
        return JSONResponse({"generation": state.generation, "building": sorted(state.building),
                             "failed": state.failed, "error": state.error,
                             "live": {n: state.live_text(n) for n in state.building | set(state.live)}})

    async def action(request):
        kind = request.path_params["action"]
        client = request.client.host if request.client else ""
        if client not in LOOPBACK_CLIENTS:
            return JSONResponse({"error": "actions are taken from this machine only"}, status_code=403)
        if not secrets.compare_digest(request.headers.get("x-starbuild-token", ""), gallery.token):
            return JSONResponse({"error": "missing or wrong session token; reload the page"}, status_code=403)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return JSONResponse({"error": "send a JSON object with the asset's name"}, status_code=400)
        status, answer = await run_in_threadpool(run_action, state, kind, body)
        return JSONResponse(answer, status_code=status)

    return Starlette(routes=[
        Route("/", index), Route("/asset/{name:path}", asset), Route("/file/{version:int}/{path:path}", file),
        Route("/thumb/{version:int}/{path:path}", thumb), Route("/object/{sha}", obj),
        Route("/api/state", api_state), Route("/api/{action}", action, methods=["POST"]),
    ], middleware=[Middleware(BaseHTTPMiddleware, dispatch=loopback_only)])


def _sniff(path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(16)
    from starbuild.config.resolve import image_format

    return f"image/{image_format(head) or 'png'}"


def run_action(state, kind: str, body: dict[str, Any]) -> tuple[int, dict]:
    """Run pick, reroll or accept for the gallery: (HTTP status, JSON answer)."""
    from starbuild.errors import RefusedError, StarbuildError
    from starbuild.review import decisions

    project, name = state.project, body["name"]
    if project is None:
        return 409, {"error": "no project loaded"}
    try:
        if kind == "pick":
            take = body.get("take")
            if not isinstance(take, int) or isinstance(take, bool):
                return 400, {"error": "pick needs an integer take"}
            record = decisions.pick(project, name, take)
            message = f"picked take {take} of {name} ({record['by']}, {record['at']})"
        elif kind == "accept":
            done = decisions.accept(project, [name], force=bool(body.get("force")), tier=state.tier)
            message = f"accepted {name}: {', '.join(done[0].record['fields'])}" if done else "nothing to accept"
        elif kind == "reroll":
            report = _reroll(state, project, name)
            if report.exit_code:
                errors = "; ".join(r.error or r.reason for r in report.results if r.error)
                return 502, {"error": f"reroll of {name} failed: {errors}"}
            message = f"rerolled {name}"
        else:
            return 404, {"error": f"no action {kind!r}"}
    except RefusedError as exc:
        return 409, {"error": str(exc)}
    except StarbuildError as exc:
        return 400, {"error": str(exc)}
    state.changed()
    return 200, {"message": message}


def _reroll(state, project, name: str):
    import dataclasses

    from starbuild.engine.build import BuildOptions
    from starbuild.review import decisions

    options = dataclasses.replace(state.options or BuildOptions(), wait=True, specs=None)
    state.begin({name})
    report = None
    try:
        report = decisions.reroll(project, [name], options, emit=state.emit)
        return report
    finally:
        state.end(report)
