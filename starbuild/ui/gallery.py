"""The preview gallery: a local page of the current assets, each with its earlier versions.

Served on 127.0.0.1 only, with no external scripts or fonts. Thumbnails are made on first request
and cached; the page asks ``/api/state`` every second and reloads itself after each rebuild.
"""

from __future__ import annotations

import hashlib
import html
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starbuild.config.project import Project
from starbuild.store.lockfile import LOCK_NAME, read_lock
from starbuild.text import printable

THUMB = 320


class GalleryState:
    """What the gallery shows besides the files: which assets are building or failed, and why."""

    def __init__(self, project: Project | None = None):
        self.project = project
        self.generation = 0
        self.building: set[str] = set()
        self.failed: dict[str, str] = {}
        self.error: str | None = None
        self._lock = threading.Lock()

    def set_project(self, project: Project) -> None:
        with self._lock:
            self.project = project
            self.error = None

    def config_error(self, message: str) -> None:
        with self._lock:
            self.error = message
            self.generation += 1

    def begin(self, names: set[str]) -> None:
        with self._lock:
            self.building = set(names)
            self.generation += 1

    def end(self, report: Any, error: str | None = None) -> None:
        with self._lock:
            self.building = set()
            if report is not None:
                self.failed = {r.name: r.error or "failed" for r in report.results if r.outcome.value == "failed"}
            self.error = error
            self.generation += 1


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#14161a;color:#e8e8e8}
header{padding:12px 20px;background:#1e2126;display:flex;gap:16px;align-items:baseline}
header h1{font-size:18px;margin:0} header span{color:#9aa0a6;font-size:13px}
main{padding:16px;display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:14px}
.card{background:#1e2126;border-radius:8px;overflow:hidden;display:flex;flex-direction:column}
.card a{color:inherit;text-decoration:none}
.card img{width:100%;height:200px;object-fit:contain;background:#0c0d0f;display:block}
.meta{padding:8px 10px;font-size:12px;line-height:1.4}
.name{font-weight:600;font-size:13px;word-break:break-all}
.prompt{color:#b8bcc2;max-height:4.2em;overflow:hidden}
.tag{display:inline-block;padding:0 6px;border-radius:4px;background:#2c3038;margin:2px 4px 0 0}
.building{background:#8a6d00}.failed{background:#8b1e1e}.placeholder{background:#3b4a6b}
.error{background:#8b1e1e;padding:10px 20px;white-space:pre-wrap;font-family:monospace}
.versions{display:flex;gap:14px;overflow-x:auto;padding:16px}
.versions .card{min-width:300px;max-width:300px}
.empty{padding:40px;color:#9aa0a6}
"""

_REFRESH = """
<script>
let gen = %d;
async function poll(){
  try { const r = await fetch('/api/state'); const s = await r.json();
        if (s.generation !== gen) { location.reload(); return; } } catch (e) {}
  setTimeout(poll, 1000);
}
setTimeout(poll, 1000);
</script>
"""


def _e(value: Any) -> str:
    text = str(value).replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    return html.escape(printable(text), quote=True)


def _page(title: str, body: str, generation: int, header: str = "") -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<meta name=viewport content='width=device-width'><style>{_CSS}</style></head><body>"
            f"<header><h1><a href='/' style='color:inherit;text-decoration:none'>starbuild</a></h1>"
            f"{header}</header>{body}{_REFRESH % generation}</body></html>")


class Gallery:
    """Renders pages and thumbnails from the project's lockfile and version folders."""

    def __init__(self, state: GalleryState, cache: Path | None = None):
        self.state = state
        self._cache = cache

    # --- data ---
    def _dirs(self):
        from starbuild.engine.build import asset_dir, cache_dir

        project = self.state.project
        return project, asset_dir(project), (self._cache or cache_dir(project))

    def _tags(self, name: str, entry: dict) -> str:
        tags = []
        if name in self.state.building:
            tags.append("<span class='tag building'>building</span>")
        if name in self.state.failed:
            tags.append(f"<span class='tag failed' title='{_e(self.state.failed[name])}'>failed: "
                        f"{_e(self.state.failed[name][:80])}</span>")
        if entry.get("placeholder"):
            tags.append("<span class='tag placeholder'>placeholder</span>")
        return "".join(tags)

    @staticmethod
    def _facts(entry: dict) -> str:
        req = entry.get("request") or {}
        bits = [req.get("model"), req.get("size"), req.get("resolution"), req.get("quality")]
        credits = entry.get("credits")
        text = " · ".join(_e(b) for b in bits if b)
        if credits is not None:
            text += f" · {credits:g} credits"
        return text

    def index(self) -> str:
        if self.state.project is None:
            return _page("starbuild", "<p class=empty>no project loaded yet</p>", self.state.generation)
        from starbuild.errors import StarbuildError

        try:
            project, assets, _ = self._dirs()
            lock = read_lock(project.root / LOCK_NAME)
        except StarbuildError as exc:  # a malformed lockfile: say so on the page, located
            return _page("starbuild gallery", f"<div class=error>{_e(printable(exc))}</div>", self.state.generation)
        version = assets.current()
        cards = []
        names = sorted(set(lock.assets) | self.state.building | set(self.state.failed))
        for name in names:
            entry = lock.assets.get(name, {})
            files = entry.get("outputs") or entry.get("files") or []  # the delivered file when processed
            img = ""
            if files and version:
                src = f"/thumb/{version}/{quote(files[0]['path'])}"
                img = f"<img loading=lazy src='{src}' alt='{_e(name)}' width={THUMB} height=200>"
            else:
                img = "<img alt='not built yet' width=320 height=200>"
            prompt = (entry.get("request") or {}).get("prompt", "")
            cards.append(
                f"<div class=card data-asset='{_e(name)}'><a href='/asset/{quote(name)}'>{img}"
                f"<div class=meta><div class=name>{_e(name)}</div><div class=prompt>{_e(prompt)}</div>"
                f"<div>{self._facts(entry)}</div><div>{self._tags(name, entry)}</div></div></a></div>")
        error = f"<div class=error>{_e(self.state.error)}</div>" if self.state.error else ""
        body = error + (f"<main>{''.join(cards)}</main>" if cards else "<p class=empty>no assets built yet</p>")
        header = f"<span>{len(names)} assets · v{version or 0:04d} · {_e(project.root.name)}</span>"
        return _page("starbuild gallery", body, self.state.generation, header)

    def asset(self, name: str) -> str | None:
        if self.state.project is None:
            return None
        _, assets, _ = self._dirs()
        current = assets.current()
        from starbuild.errors import StarbuildError

        try:
            manifests = {v: assets.manifest(v) for v in sorted(assets.versions())}
        except StarbuildError as exc:
            return _page(f"{name} · starbuild", f"<div class=error>{_e(printable(exc))}</div>", self.state.generation)
        # Versions in which the asset's image changed, newest first: an unchanged image is shown once,
        # labelled with the version that introduced it.
        distinct: list[tuple[int, dict]] = []
        for v, manifest in manifests.items():
            entry = (manifest.get("assets") or {}).get(name)
            if entry and (not distinct or (distinct[-1][1].get("files"), distinct[-1][1].get("outputs")) !=
                          (entry.get("files"), entry.get("outputs"))):
                distinct.append((v, entry))
        cards = []
        for v, entry in reversed(distinct):
            files = [f for f in entry.get("outputs") or entry.get("files") or [] if f.get("role") != "variant"]
            imgs = "".join(f"<a href='/file/{v}/{quote(f['path'])}'><img loading=lazy "
                           f"src='/thumb/{v}/{quote(f['path'])}' alt='{_e(f['path'])}'></a>" for f in files)
            imgs += _deliverables(v, entry)
            mark = " (current)" if v == distinct[-1][0] and current and current >= v else ""
            prompt = (entry.get("request") or {}).get("prompt", "")
            cards.append(f"<div class=card data-version='{v}'>{imgs}<div class=meta>"
                         f"<div class=name>v{v:04d}{mark}</div><div>{_e(entry.get('created', ''))}</div>"
                         f"<div class=prompt>{_e(prompt)}</div><div>{self._facts(entry)}</div></div></div>")
        if not cards:
            return None
        header = f"<span>{_e(name)} · {len(cards)} version(s)</span>"
        return _page(f"{name} · starbuild", f"<div class=versions>{''.join(cards)}</div>", self.state.generation,
                     header)

    def source_path(self, sha: str) -> Path | None:
        """A generated source image from the object store, when the lockfile names it."""
        from starbuild.store.objects import ObjectStore

        project, _, cache = self._dirs()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            return None
        lock = read_lock(project.root / LOCK_NAME)
        if not any(f.get("sha256") == sha for e in lock.assets.values() for f in e.get("files") or []):
            return None
        path = ObjectStore(cache).path(sha)
        return path if path.is_file() else None

    def file_path(self, version: int, rel: str) -> Path | None:
        """A file of a version, refusing paths that leave the version folder."""
        _, assets, _ = self._dirs()
        base = assets.version_path(version).resolve()
        path = (base / rel).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            return None
        return path

    def thumbnail(self, version: int, rel: str) -> Path | None:
        """A cached thumbnail of a version's file (versions are immutable, so the cache never goes stale)."""
        src = self.file_path(version, rel)
        if src is None:
            return None
        _, _, cache = self._dirs()
        key = hashlib.sha256(f"{version}/{rel}/{THUMB}".encode()).hexdigest()[:32]
        out = cache / "thumbs" / f"{key}.jpg"
        if not out.exists():
            from PIL import Image

            out.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(src) as img:
                img.draft("RGB", (THUMB, THUMB))
                img.thumbnail((THUMB, THUMB))
                tmp = out.with_suffix(f".{threading.get_ident()}.tmp")
                img.convert("RGB").save(tmp, "JPEG", quality=80)
                tmp.replace(out)
        return out


def _deliverables(version: int, entry: dict) -> str:
    """Below a processed asset's delivered file: its generated source and its variants, as links."""
    if "outputs" not in entry:
        return ""
    links = [f"<a href='/source/{_e(f['sha256'])}'>source {f.get('width')}x{f.get('height')}</a>"
             for f in entry.get("files") or []]
    links += [f"<a href='/file/{version}/{quote(f['path'])}'>{_e(f['path'])} ({f.get('width')}w)</a>"
              for f in entry.get("outputs") or [] if f.get("role") == "variant"]
    return f"<div class=meta>{' · '.join(links)}</div>"


def create_app(state: GalleryState, cache: Path | None = None):
    """The gallery's ASGI app."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
    from starlette.routing import Route

    gallery = Gallery(state, cache)

    async def index(request):
        return HTMLResponse(gallery.index())

    async def asset(request):
        page = gallery.asset(request.path_params["name"])
        return HTMLResponse(page) if page else PlainTextResponse("no such asset", status_code=404)

    async def file(request):
        path = gallery.file_path(request.path_params["version"], request.path_params["path"])
        return FileResponse(path) if path else PlainTextResponse("not found", status_code=404)

    async def source(request):
        path = gallery.source_path(request.path_params["sha"])
        return FileResponse(path, media_type="image/png") if path else PlainTextResponse("not found", status_code=404)

    async def thumb(request):
        from starlette.concurrency import run_in_threadpool

        path = await run_in_threadpool(gallery.thumbnail, request.path_params["version"], request.path_params["path"])
        if path is None:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, headers={"Cache-Control": "max-age=31536000, immutable"})

    async def api_state(request):
        return JSONResponse({"generation": state.generation, "building": sorted(state.building),
                             "failed": state.failed, "error": state.error})

    return LoopbackOnly(Starlette(routes=[
        Route("/", index), Route("/asset/{name:path}", asset), Route("/file/{version:int}/{path:path}", file),
        Route("/thumb/{version:int}/{path:path}", thumb), Route("/api/state", api_state),
        Route("/source/{sha}", source),
    ]))


class LoopbackOnly:
    """ASGI middleware: answer only requests whose Host is a loopback name.

    A web page elsewhere can make a browser send requests here through a DNS name that resolves
    to 127.0.0.1 (DNS rebinding); such requests carry that name as Host and are refused.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not _loopback_host(scope):
            from starlette.responses import PlainTextResponse

            response = PlainTextResponse("this gallery answers only to localhost, 127.0.0.1 and [::1]\n",
                                         status_code=421)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _loopback_host(scope) -> bool:
    from urllib.parse import urlsplit

    from starbuild.config.urls import is_loopback_host

    host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return False
    return is_loopback_host(name)


def bind_gallery(port: int):
    """The gallery's listening socket on 127.0.0.1, bound now so that a busy port is a clear error."""
    import socket

    from starbuild.errors import UsageError

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot serve the gallery on 127.0.0.1 port {port}: {exc.strerror or exc}; "
                         "choose another port (0 picks a free one)") from None
    return sock


def serve_gallery(state: GalleryState, port: int = 8700, *, in_thread: bool = False, sock=None):
    """Serve the gallery on 127.0.0.1; in a daemon thread (returns the server) or blocking.

    A busy port raises UsageError before anything is announced or served.
    """
    import uvicorn

    sock = sock or bind_gallery(port)
    config = uvicorn.Config(create_app(state), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    server.port = sock.getsockname()[1]  # the port actually bound (port 0 picks one)
    if not in_thread:
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
        return server
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="starbuild-gallery")
    thread.start()
    return server
