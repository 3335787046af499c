"""The gallery's HTTP routes: pages, images, live state, and the review actions.

Every request must name a loopback host (no DNS rebinding: gallery.LoopbackOnly wraps the app);
actions must also come from a loopback client with the session's token, and run the same library
functions as the commands.
"""

from __future__ import annotations

import secrets
from typing import Any

LOOPBACK_CLIENTS = {"127.0.0.1", "::1", "localhost"}


class _Handlers:
    """The endpoints of one Gallery."""

    def __init__(self, gallery):
        self.gallery, self.state = gallery, gallery.state

    async def index(self, request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import HTMLResponse

        return HTMLResponse(await run_in_threadpool(self.gallery.index))

    async def asset(self, request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import HTMLResponse, PlainTextResponse

        page = await run_in_threadpool(self.gallery.asset, request.path_params["name"])
        return HTMLResponse(page) if page else PlainTextResponse("no such asset", status_code=404)

    async def file(self, request):
        return _file(self.gallery.file_path(request.path_params["version"], request.path_params["path"]))

    async def obj(self, request):
        from starlette.concurrency import run_in_threadpool

        path = await run_in_threadpool(self.gallery.object_path, request.path_params["sha"])
        return _file(path, media_type=_sniff(path) if path else None)

    async def source(self, request):
        from starlette.concurrency import run_in_threadpool

        path = await run_in_threadpool(self.gallery.source_path, request.path_params["sha"])
        return _file(path, media_type=_sniff(path) if path else None)

    async def thumb(self, request):
        from starlette.concurrency import run_in_threadpool

        params = request.path_params
        path = await run_in_threadpool(self.gallery.thumbnail, params["version"], params["path"])
        return _file(path, headers={"Cache-Control": "max-age=31536000, immutable"})

    async def api_state(self, request):
        from starlette.responses import JSONResponse

        state = self.state
        return JSONResponse({"generation": state.generation, "building": sorted(state.building),
                             "failed": state.failed, "error": state.error,
                             "live": {n: state.live_text(n) for n in state.building | set(state.live)}})

    async def action(self, request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        client = request.client.host if request.client else ""
        if client not in LOOPBACK_CLIENTS:
            return JSONResponse({"error": "actions are taken from this machine only"}, status_code=403)
        if not secrets.compare_digest(request.headers.get("x-starbuild-token", ""), self.gallery.token):
            return JSONResponse({"error": "missing or wrong session token; reload the page"}, status_code=403)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return JSONResponse({"error": "send a JSON object with the asset's name"}, status_code=400)
        status, answer = await run_in_threadpool(run_action, self.state, request.path_params["action"], body)
        return JSONResponse(answer, status_code=status)


def routes(gallery):
    """A Starlette app over a Gallery."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    h = _Handlers(gallery)
    return Starlette(routes=[
        Route("/", h.index), Route("/asset/{name:path}", h.asset), Route("/file/{version:int}/{path:path}", h.file),
        Route("/thumb/{version:int}/{path:path}", h.thumb), Route("/object/{sha}", h.obj),
        Route("/source/{sha}", h.source),
        Route("/api/state", h.api_state), Route("/api/{action}", h.action, methods=["POST"]),
    ])


def _file(path, **kwargs):
    from starlette.responses import FileResponse, PlainTextResponse

    return FileResponse(path, **kwargs) if path else PlainTextResponse("not found", status_code=404)


def _sniff(path) -> str:
    from starbuild.config.resolve import image_format

    with open(path, "rb") as fh:
        return f"image/{image_format(fh.read(16)) or 'png'}"


def run_action(state, kind: str, body: dict[str, Any]) -> tuple[int, dict]:
    """Run pick, reroll or accept for the gallery: (HTTP status, JSON answer)."""
    from starbuild.errors import RefusedError, StarbuildError

    action = _ACTIONS.get(kind)
    if action is None:
        return 404, {"error": f"no action {kind!r}"}
    if state.project is None:
        return 409, {"error": "no project loaded"}
    try:
        status, answer = action(state, body["name"], body)
    except RefusedError as exc:
        return 409, {"error": str(exc)}
    except StarbuildError as exc:
        return 400, {"error": str(exc)}
    if status == 200:
        state.changed()
    return status, answer


def _pick(state, name: str, body: dict) -> tuple[int, dict]:
    from starbuild.review import decisions

    take = body.get("take")
    if not isinstance(take, int) or isinstance(take, bool):
        return 400, {"error": "pick needs an integer take"}
    record = decisions.pick(state.project, name, take)
    return 200, {"message": f"picked take {take} of {name} ({record['by']}, {record['at']})"}


def _accept(state, name: str, body: dict) -> tuple[int, dict]:
    from starbuild.review import decisions

    done = decisions.accept(state.project, [name], force=bool(body.get("force")), tier=state.tier)
    return 200, {"message": f"accepted {name}: {', '.join(done[0].record['fields'])}" if done
                 else "nothing to accept"}


def _reroll(state, name: str, body: dict) -> tuple[int, dict]:
    import dataclasses

    from starbuild.engine.build import BuildOptions
    from starbuild.review import decisions

    options = dataclasses.replace(state.options or BuildOptions(), wait=True, specs=None, tier=state.tier)
    state.begin({name})
    report = None
    try:
        report = decisions.reroll(state.project, [name], options, emit=state.emit)
    finally:
        state.end(report)
    if report.exit_code:
        errors = "; ".join(r.error or r.reason for r in report.results if r.error)
        return 502, {"error": f"reroll of {name} failed: {errors}"}
    return 200, {"message": f"rerolled {name}"}


_ACTIONS = {"pick": _pick, "accept": _accept, "reroll": _reroll}
