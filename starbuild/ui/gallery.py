"""The review gallery: the current assets as matrix grids, candidates to pick, changes to accept.

Served on loopback only, with no external scripts or fonts; pages are Jinja2 templates in
``ui/templates``. Actions (pick, reroll, accept) are POSTs carrying a per-session token and run the
same library code as the commands. The page asks ``/api/state`` every second for the live status
of tasks in flight and reloads itself after each rebuild or decision.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from pathlib import Path
from typing import Any

from starbuild.config.project import Project
from starbuild.review.entries import referenced_shas
from starbuild.store.lockfile import LOCK_NAME, read_lock
from starbuild.text import printable

THUMB = 320
_SHA = re.compile(r"^[0-9a-f]{64}$")


class GalleryState:
    """What the gallery shows besides the files: builds in flight with their progress, failures and why."""

    def __init__(self, project: Project | None = None, options: Any = None, tier: str | None = None):
        self.project = project
        self.options = options  # BuildOptions for the gallery's reroll (offline or not); None: defaults
        self.tier = tier
        self.generation = 0
        self.building: set[str] = set()
        self.failed: dict[str, str] = {}
        self.error: str | None = None
        self.live: dict[str, str] = {}
        self._tasks: dict[str, str] = {}
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
            self.live = {}
            self.generation += 1

    def end(self, report: Any, error: str | None = None) -> None:
        with self._lock:
            self.building = set()
            self.live = {}
            if report is not None:
                self.failed = {r.name: r.error or "failed" for r in report.results if r.outcome.value == "failed"}
            self.error = error
            self.generation += 1

    def changed(self) -> None:
        """A decision changed the lockfile: pages reload."""
        with self._lock:
            self.generation += 1

    def emit(self, kind: str, name: str, info: dict) -> None:
        """A build event (the runner's), kept as each asset's live status; a job counts for its asset."""
        asset = name.split("#", 1)[0]
        with self._lock:
            if kind in ("submitted", "resume") and info.get("task_id"):
                self._tasks[info["task_id"]] = asset
                self.live[asset] = "submitted"
            elif kind == "submit":
                self.live[asset] = "submitting"
            elif kind == "progress" and info.get("task_id") in self._tasks:
                self.live[self._tasks[info["task_id"]]] = f"{info.get('status')} {info.get('progress', 0)}%"
            elif kind == "backoff":
                self.live[asset] = "429: backing off" if info.get("rate_limited") else "server busy: backing off"
            elif kind in ("lease_wait", "waiting"):
                self.live[asset] = "waiting for a teammate's lease"
            elif kind in ("built", "cached", "pulled", "resumed", "failed", "skipped"):
                self.live.pop(asset, None)

    def live_text(self, name: str) -> str:
        return self.live.get(name, "building" if name in self.building else "")


def _templates():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("starbuild.ui", "templates"), finalize=_shown,
                       autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def _shown(value: Any) -> Any:
    """Every value a page shows: server text and file names with their control characters escaped."""
    from markupsafe import Markup

    if not isinstance(value, str) or isinstance(value, Markup):
        return value
    return printable(value.replace("\r\n", " ").replace("\n", " ").replace("\t", " "))


class Gallery:
    """Renders pages and thumbnails from the project's lockfile, version folders and object store."""

    def __init__(self, state: GalleryState, cache: Path | None = None, token: str = ""):
        self.state = state
        self._cache = cache
        self.token = token
        self.env = _templates()

    def _dirs(self):
        from starbuild.engine.build import asset_dir, cache_dir

        project = self.state.project
        return project, asset_dir(project), (self._cache or cache_dir(project))

    def _render(self, template: str, **data) -> str:
        return self.env.get_template(template).render(token=self.token, generation=self.state.generation,
                                                      error=self.state.error, **data)

    def index(self) -> str:
        from starbuild.ui.review_view import FILTERS, ReviewView

        if self.state.project is None:
            return self._render("index.html", title="starbuild", groups=[], count=0, version=0, project="",
                                filters=FILTERS)
        from starbuild.errors import StarbuildError

        try:
            project, assets, _ = self._dirs()
            view = ReviewView(project, self.state, assets)
        except StarbuildError as exc:  # a malformed lockfile: say so on the page, located
            return self._render("index.html", title="starbuild gallery", groups=[], count=0, version=0,
                                project="", filters=FILTERS, page_error=str(exc))
        groups = view.groups()
        return self._render("index.html", title="starbuild gallery", groups=groups, filters=FILTERS,
                            count=sum(len(g.cards) for g in groups), version=view.version or 0,
                            project=project.root.name)

    def asset(self, name: str) -> str | None:
        from starbuild.ui.review_view import ReviewView

        if self.state.project is None:
            return None
        from starbuild.errors import StarbuildError

        try:
            project, assets, _ = self._dirs()
            for v in assets.versions():  # a damaged manifest is named before anything else
                assets.manifest(v)
            page = ReviewView(project, self.state, assets).asset(name)
        except StarbuildError as exc:  # a malformed lockfile or manifest: say so on the page
            return self._render("index.html", title=f"{name} · starbuild", groups=[], count=0, version=0,
                                project="", filters=(), page_error=str(exc))
        return self._render("asset.html", title=f"{name} · starbuild", a=page) if page else None

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

    def object_path(self, sha: str) -> Path | None:
        """A stored image the lockfile refers to (a candidate, say); nothing else of the store is served."""
        from starbuild.store.objects import ObjectStore

        project, _, cache = self._dirs()
        if not _SHA.match(sha):
            return None
        lock = read_lock(project.root / LOCK_NAME)
        if not any(sha in referenced_shas(e) for e in lock.assets.values()):
            return None
        path = ObjectStore(cache).path(sha)
        return path if path.is_file() else None

    def thumbnail(self, version: int, rel: str) -> Path | None:
        """A cached thumbnail of a version's file (versions are immutable, so the cache never goes stale).

        PNG when the image has transparency, so the page's checkerboard shows through; JPEG otherwise.
        """
        src = self.file_path(version, rel)
        if src is None:
            return None
        _, _, cache = self._dirs()
        key = hashlib.sha256(f"{version}/{rel}/{THUMB}".encode()).hexdigest()[:32]
        for ext in ("jpg", "png"):
            if (cache / "thumbs" / f"{key}.{ext}").exists():
                return cache / "thumbs" / f"{key}.{ext}"
        from PIL import Image

        (cache / "thumbs").mkdir(parents=True, exist_ok=True)
        with Image.open(src) as img:
            alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            img.draft("RGB", (THUMB, THUMB))
            img.thumbnail((THUMB, THUMB))
            out = cache / "thumbs" / f"{key}.{'png' if alpha else 'jpg'}"
            tmp = out.with_suffix(f".{threading.get_ident()}.tmp")
            if alpha:
                img.convert("RGBA").save(tmp, "PNG")
            else:
                img.convert("RGB").save(tmp, "JPEG", quality=80)
            tmp.replace(out)
        return out


def create_app(state: GalleryState, cache: Path | None = None, token: str | None = None):
    """The gallery's ASGI app; ``token`` (random by default) must come with every POST."""
    from starbuild.ui.gallery_routes import routes

    return LoopbackOnly(routes(Gallery(state, cache, token or secrets.token_urlsafe(24))))


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
