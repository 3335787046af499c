"""Security, end to end: the key stays secret, paths stay inside the project, configs cannot run
code, templates stay in their sandbox, hostile results are refused, callback URLs are checked."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from conftest import api_build
from starbuild.emulator import Emulator, EmulatorConfig, ManualClock, serve_in_thread
from starbuild.engine.outcome import Outcome

CANARY = "sk-canary-4c1e9b7f0a2d6e83"


def _png(width: int, height: int, colour=(40, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def _snapshot(root: Path) -> dict[str, int]:
    """Every path under root (symlinks not followed) with its size, to prove nothing was written."""
    out = {}
    for path in sorted(root.rglob("*")):
        out[str(path.relative_to(root))] = path.lstat().st_size if not path.is_dir() else -1
    return out


def _assert_clean_refusal(res, code: int = 2) -> None:
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    assert res.stderr.startswith("error: "), res.stderr


# --- the key is never written or printed ------------------------------------------------------


def _cli(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "starbuild", "-C", str(root), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(n in data for n in needles):
                hits.append(str(path))
    return hits


def test_key_never_written_printed_or_recorded(project, tmp_path):
    cache = tmp_path / ".cache"
    project.config("""\
        version: 1
        provider:
          concurrency: 4
        images:
          "plain/{{ i }}":
            matrix:
              i: [1, 2]
            prompt: "a lantern {{ i }}"
            size: "1:1"
            quality: low
          edited:
            prompt: "the lantern at night"
            inputs: [refs/in.png]
            size: "1:1"
            quality: low
        """)
    (project.root / "refs").mkdir()
    (project.root / "refs" / "in.png").write_bytes(_png(64, 64))
    # The emulator accepts only the canary: a successful build proves the key was really sent.
    em = Emulator(EmulatorConfig(render="plain", api_key=CANARY))
    outputs = []
    with serve_in_thread(em) as url:
        env = {**os.environ, "STARMAGIC_API_KEY": CANARY, "STARMAGIC_BASE_URL": url,
               "STARMAGIC_FILES_URL": em.config.files_url, "STARBUILD_CACHE_DIR": str(cache)}
        first = _cli(project.root, env, "-v", "build")
        assert first.returncode == 0, first.stderr
        forced = _cli(project.root, env, "-vv", "build", "--force", "*", "--json")
        assert forced.returncode == 0, forced.stderr
        outputs += [first.stdout, first.stderr, forced.stdout, forced.stderr]
        ledger_text = httpx.get(f"{url}/_emulator/ledger").text
    assert "POST" in first.stderr  # -v really logged the requests
    assert em.counters["upload"] >= 1 and len(em.ledger) == 6
    # The same project against a server that refuses this key: a 401, and the build stops (exit 3).
    other = Emulator(EmulatorConfig(render="plain", api_key="sk-someone-else"))
    with serve_in_thread(other) as url:
        env.update(STARMAGIC_BASE_URL=url, STARMAGIC_FILES_URL=other.config.files_url)
        refused = _cli(project.root, env, "-v", "build", "--force", "*")
    assert refused.returncode == 3 and "401" in refused.stdout + refused.stderr, refused.stderr
    outputs += [refused.stdout, refused.stderr]

    needles = [CANARY.encode(), base64.b64encode(CANARY.encode()), CANARY.encode("utf-16-le")]
    for text in outputs + [ledger_text, repr(em.ledger), repr(other.ledger)]:
        assert CANARY not in text and base64.b64encode(CANARY.encode()).decode() not in text
    assert _files_containing(project.root, needles) == []
    assert _files_containing(cache, needles) == []
    assert cache.is_dir() and any(cache.rglob("*"))  # the check above did look at a real cache


# --- names and paths that escape the project ----------------------------------------------------


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder next to the project with files a hostile config would like to reach."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "prompt.j2").write_text("the contents of a private file")
    (out / "axis.json").write_text("[1, 2]")
    (out / "axis.csv").write_text("sku,title\na,b\n")
    (out / "in.png").write_bytes(_png(64, 64))
    return out


ESCAPES = {
    "dotdot name": "images:\n  '../evil':\n    prompt: hi\n    size: '1:1'\n",
    "dotdot inside a name": "images:\n  'icons/../../evil':\n    prompt: hi\n    size: '1:1'\n",
    "absolute name": "images:\n  '{outside}/evil':\n    prompt: hi\n    size: '1:1'\n",
    "templated name rendering ..": ("images:\n  'a/{{{{ x }}}}':\n    matrix:\n      x: ['..', ok]\n"
                                    "    prompt: hi\n    size: '1:1'\n"),
    "templated name rendering an absolute path": ("images:\n  '{{{{ x }}}}/evil':\n    vars:\n"
                                                  "      x: '{outside}'\n    prompt: hi\n    size: '1:1'\n"),
    "prompt_file ..": "images:\n  a:\n    prompt_file: ../outside/prompt.j2\n    size: '1:1'\n",
    "prompt_file absolute": "images:\n  a:\n    prompt_file: '{outside}/prompt.j2'\n    size: '1:1'\n",
    "include ..": "images:\n  a:\n    prompt: \"{{% include '../outside/prompt.j2' %}}\"\n    size: '1:1'\n",
    "axis file ..": ("images:\n  'a{{{{ x }}}}':\n    matrix:\n      x: {{file: ../outside/axis.json}}\n"
                     "    prompt: hi\n    size: '1:1'\n"),
    "axis file absolute": ("images:\n  'a{{{{ p.sku }}}}':\n    matrix:\n      p: {{file: '{outside}/axis.csv'}}\n"
                           "    prompt: hi\n    size: '1:1'\n"),
    "input ..": "images:\n  a:\n    prompt: hi\n    size: '1:1'\n    inputs: [../outside/in.png]\n",
    "input absolute": "images:\n  a:\n    prompt: hi\n    size: '1:1'\n    inputs: ['{outside}/in.png']\n",
    "mask ..": ("images:\n  a:\n    prompt: hi\n    size: '1:1'\n    inputs: [in.png]\n"
                "    mask: ../outside/in.png\n"),
}


@pytest.mark.parametrize("case", list(ESCAPES))
def test_paths_escaping_the_project_are_refused(project, outside, case):
    project.config("version: 1\n" + ESCAPES[case].format(outside=outside))
    (project.root / "in.png").write_bytes(_png(64, 64))
    before = _snapshot(outside.parent)
    res = project.run("build", "--offline")
    _assert_clean_refusal(res)
    assert "starbuild.yaml:" in res.stderr
    after = _snapshot(outside.parent)
    # Only the (ignored) cache may appear; nothing in the project's outputs or outside it.
    new = {p for p in set(after) - set(before) if not p.startswith(".cache")}
    assert new == set(), new
    assert not (project.root / "assets").exists() and not (project.root / "starbuild.lock").exists()


SYMLINKED = {
    "axis file": ("data/axis.json", "axis.json",
                  "images:\n  'a{{ x }}':\n    matrix:\n      x: {file: data/axis.json}\n"
                  "    prompt: hi\n    size: '1:1'\n"),
    "input": ("refs/in.png", "in.png", "images:\n  a:\n    prompt: hi\n    size: '1:1'\n    inputs: [refs/in.png]\n"),
}


@pytest.mark.parametrize("case", list(SYMLINKED))
def test_symlinks_out_of_the_project_are_refused(project, outside, case):
    link, target, config = SYMLINKED[case]
    project.config("version: 1\n" + config)
    (project.root / link).parent.mkdir(parents=True, exist_ok=True)
    (project.root / link).symlink_to(outside / target)
    res = project.run("build", "--offline")
    _assert_clean_refusal(res)
    assert "outside the project" in res.stderr


OUTPUT_DIRS = ["dotdot", "absolute", "symlinked folder", "through a symlinked parent", "symlink inside"]


def _setup_output_dir(project, outside, case: str) -> str:
    project.root.mkdir(parents=True, exist_ok=True)
    if case == "dotdot":
        return "../outside/assets"
    if case == "absolute":
        return str(outside / "assets")
    if case == "symlinked folder":
        (outside / "assets").mkdir()
        (project.root / "assets").symlink_to(outside / "assets")
        return "assets"
    if case == "through a symlinked parent":
        (project.root / "via").symlink_to(outside)
        return "via/assets"
    if case == "symlink inside":  # even a symlink that stays inside: versions must be real folders
        (project.root / "real").mkdir()
        (project.root / "assets").symlink_to(project.root / "real")
        return "assets"
    raise AssertionError(case)


def _output_dir_build(project, outside, case):
    value = _setup_output_dir(project, outside, case)
    project.config(f"version: 1\noutput:\n  dir: '{value}'\nimages:\n  a:\n    prompt: hi\n    size: '1:1'\n")
    before = _snapshot(outside)
    res = project.run("build", "--offline")
    return res, before


@pytest.mark.parametrize("case", OUTPUT_DIRS)
def test_output_dir_out_of_the_project_writes_nothing(project, outside, case):
    res, before = _output_dir_build(project, outside, case)
    assert res.exit_code != 0, res.stdout
    assert "Traceback" not in res.stderr + res.stdout
    assert "output.dir" in res.stderr and ("inside the project" in res.stderr or "symlink" in res.stderr)
    assert _snapshot(outside) == before
    assert not (project.root / "starbuild.lock").exists()
    if (project.root / "real").exists():
        assert list((project.root / "real").iterdir()) == []


# --- YAML that would construct objects ----------------------------------------------------------


YAML_TAGS = {
    "object/apply in a prompt": "images:\n  a:\n    prompt: !!python/object/apply:os.system ['touch {marker}']\n"
                                "    size: '1:1'\n",
    "object/apply at the top": "!!python/object/apply:os.system ['touch {marker}']\n",
    "object/new in vars": "vars:\n  x: !!python/object/new:subprocess.call [['touch', '{marker}']]\n"
                          "images:\n  a:\n    prompt: hi\n    size: '1:1'\n",
    "name tag": "vars:\n  x: !!python/name:os.system\nimages:\n  a:\n    prompt: hi\n    size: '1:1'\n",
    "in an axis file": "images:\n  'a{{{{ x }}}}':\n    matrix:\n      x: {{file: axis.yaml}}\n"
                       "    prompt: hi\n    size: '1:1'\n",
}


@pytest.mark.parametrize("case", list(YAML_TAGS))
def test_yaml_tags_that_construct_objects_are_refused(project, tmp_path, case):
    marker = tmp_path / "ran"
    text = YAML_TAGS[case].format(marker=marker)
    project.config(text if text.startswith("!!") else "version: 1\n" + text)
    project.write("axis.yaml", f"- !!python/object/apply:os.system ['touch {marker}']\n")
    for command in (("validate",), ("plan",), ("build", "--offline")):
        res = project.run(*command)
        _assert_clean_refusal(res)
        assert "tag" in res.stderr
    assert not marker.exists()


# --- the Jinja2 sandbox ---------------------------------------------------------------------------


SANDBOX_ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__ }}",
    "{{ x.__class__.__base__.__subclasses__() }}",
    "{{ ''|attr('__class__') }}",
    "{{ '{0.__class__}'.format(x) }}",
    "{{ [].append.__self__ }}",
    "{{ range.__call__.__self__ }}",
    "{% set c = cycler.__init__ %}{{ c }}",
]


@pytest.mark.parametrize("where", ["prompt", "name", "prompt_file", "size"])
@pytest.mark.parametrize("expr", SANDBOX_ESCAPES)
def test_jinja_sandbox_escapes_are_refused(project, expr, where):
    prompt, name, size = "hi", "a", "'1:1'"
    if where == "prompt":
        prompt = expr
    elif where == "name":
        name = expr + "x"
    elif where == "size":
        size = json.dumps(expr)
    body = f"    prompt: {json.dumps(prompt)}\n"
    if where == "prompt_file":
        project.write("prompts/p.j2", expr)
        body = "    prompt_file: prompts/p.j2\n"
    project.config(f"version: 1\nvars:\n  x: 1\nimages:\n  {json.dumps(name)}:\n{body}    size: {size}\n")
    for command in (("validate",), ("build", "--offline")):
        res = project.run(*command)
        _assert_clean_refusal(res)
        assert "uid=" not in res.stderr + res.stdout
    assert not (project.root / "assets").exists()


def test_sandbox_refusal_says_why(project):
    project.config("version: 1\nimages:\n  a:\n    prompt: \"{{ ''.__class__.__mro__ }}\"\n    size: '1:1'\n")
    res = project.run("validate")
    _assert_clean_refusal(res)
    assert "starbuild.yaml:4:" in res.stderr and "images.a.prompt" in res.stderr and "unsafe" in res.stderr


# --- hostile results from the API -----------------------------------------------------------------


def _bomb_png(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (the data is a few rows of zeros)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


HUGE = 65 * 2**20  # past the client's 64 MB download cap


class HostileApi:
    """Answers submit and task queries like the API; each prompt names what its result link serves."""

    def __init__(self):
        self.config = SimpleNamespace(public_url="")  # what serve_in_thread sets on an emulator
        self.tasks: dict[str, str] = {}
        self.cdn_headers: list[dict] = []
        self.app = Starlette(routes=[
            Route("/v1/images/generations", self.submit, methods=["POST"]),
            Route("/v1/tasks/{task_id}", self.task, methods=["GET"]),
            Route("/cdn/{name}", self.result, methods=["GET"]),
        ])

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)

    async def submit(self, request: Request) -> Response:
        body = await request.json()
        now = int(time.time())
        task_id = f"task-unified-{now}-{len(self.tasks):08d}"
        self.tasks[task_id] = body["prompt"]
        return JSONResponse({"created": now, "id": task_id, "model": body["model"], "object": "image.generation.task",
                             "progress": 0, "status": "pending", "task_info": {"can_cancel": True, "estimated_time": 0},
                             "type": "image", "usage": {"billing_rule": "per_call", "credits_reserved": 1.0}})

    async def task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        kind = self.tasks[task_id]
        return JSONResponse({"id": task_id, "status": "completed", "progress": 100, "object": "image.generation.task",
                             "results": [f"{request.base_url}cdn/{kind}.png"]})

    async def result(self, request: Request) -> Response:
        self.cdn_headers.append(dict(request.headers))
        kind = request.path_params["name"].removesuffix(".png")
        if kind == "good":
            return Response(_png(1024, 1024), media_type="image/png")
        if kind == "bomb":
            return Response(_bomb_png(30000, 30000), media_type="image/png")
        if kind == "oversized":  # decodes as a header, but more pixels than any size the API makes
            return Response(_bomb_png(5000, 5000), media_type="image/png")
        if kind == "wrongsize":
            return Response(_png(512, 512), media_type="image/png")
        if kind == "truncated":
            data = _png(1024, 1024, (1, 2, 3))
            return Response(data[: len(data) // 2], media_type="image/png")
        if kind == "notimage":
            return Response(b"<html><body>Access denied</body></html>", media_type="image/png")
        if kind == "huge":
            async def stream():
                chunk = b"\x00" * 2**20
                for _ in range(HUGE // len(chunk)):
                    yield chunk
            return StreamingResponse(stream(), media_type="image/png")
        raise AssertionError(kind)


BAD = {"bomb": "bomb", "oversized": "larger than any size", "wrongsize": "512x512",
       "truncated": "decode", "notimage": "decode", "huge": "larger than 64 MB"}


def test_hostile_results_are_refused_per_asset(project, tmp_path, caplog):
    api = HostileApi()
    images = "".join(f"  {kind}:\n    prompt: {kind}\n" for kind in ["good", *BAD])
    project.config(f"version: 1\nprovider:\n  base_url: https://api.hostile.test\n  concurrency: 8\n"
                   f"defaults:\n  size: '1:1'\n  quality: low\nimages:\n{images}")
    caplog.set_level("DEBUG")
    report = api_build(project, None, transport=httpx.ASGITransport(app=api))
    by_name = {r.name: r for r in report.results}
    assert int(report.exit_code) == 1
    assert by_name["good"].outcome == Outcome.BUILT
    for kind, reason in BAD.items():
        r = by_name[kind]
        assert r.outcome == Outcome.FAILED, (kind, r)
        assert reason in (r.error or ""), (kind, r.error)
        assert not r.error.startswith("internal error"), r.error
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"
    # Nothing of the refused results is published, stored or left behind.
    lock = project.lock()
    assert set(lock["assets"]) == {"good"}
    manifest = json.loads((project.root / "assets" / "current" / "manifest.json").read_text())
    assert set(manifest["assets"]) == {"good"}
    assert sorted(p.name for p in (project.root / "assets" / "current").iterdir()) == ["good.png", "images.json",
                                                                                     "manifest.json"]
    objects = tmp_path / ".cache" / "objects"
    stored = [p for p in objects.rglob("*") if p.is_file() and p.parent.name != "tmp"]
    assert [p.name for p in stored] == [lock["assets"]["good"]["files"][0]["sha256"]]
    assert list((objects / "tmp").iterdir()) == []
    # Result links are public CDN URLs: the key never goes there.
    assert api.cdn_headers and not any("authorization" in h for h in api.cdn_headers)


def test_hostile_results_over_the_cli_print_no_traceback(project, tmp_path):
    """The same refusal seen by a user: one line per failed asset, exit code 1."""
    api = HostileApi()
    project.config("version: 1\nprovider:\n  base_url: https://api.hostile.test\n"
                   "images:\n  bomb:\n    prompt: bomb\n    size: '1:1'\n  notimage:\n    prompt: notimage\n"
                   "    size: '1:1'\n")
    with serve_in_thread(api) as url:
        env = {**os.environ, "STARMAGIC_API_KEY": CANARY, "STARMAGIC_BASE_URL": url,
               "STARBUILD_CACHE_DIR": str(tmp_path / ".cache")}
        res = _cli(project.root, env, "build")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert "failed: bomb:" in res.stdout and "decompression bomb" in res.stdout
    assert "failed: notimage:" in res.stdout and "does not decode" in res.stdout
    assert not (project.root / "assets").exists() and not (project.root / "starbuild.lock").exists()


# --- callback URLs, checked the way the service checks them ---------------------------------------


REFUSED_CALLBACKS = [
    "http://hooks.example.com/starmagic",
    "https://127.0.0.1/hook",
    "https://localhost/hook",
    "https://api.localhost/hook",
    "https://[::1]/hook",
    "https://10.1.2.3/hook",
    "https://172.16.0.9/hook",
    "https://192.168.1.20/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://0.0.0.0/hook",
    "https://[fd00::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://user:pw@127.0.0.1/hook",
    "ftp://hooks.example.com/hook",
    "https://hooks.example.com/" + "a" * 2100,
]


@pytest.fixture
def callback_api():
    """The emulator over real HTTP with a clock that never moves: no callback is ever delivered."""
    em = Emulator(EmulatorConfig(render="plain", latency=5.0), clock=ManualClock())
    with serve_in_thread(em) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {CANARY}"}) as client:
            yield em, client
    assert em.callbacks.log == []


def _submit_with_callback(client: httpx.Client, url: str) -> httpx.Response:
    return client.post("/v1/images/generations",
                       json={"model": "gpt-image-2", "prompt": "a kite", "size": "1:1", "callback_url": url})


@pytest.mark.parametrize("url", REFUSED_CALLBACKS, ids=lambda u: u[:40])
def test_callback_urls_the_service_refuses(callback_api, url):
    em, client = callback_api
    response = _submit_with_callback(client, url)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "callback_url" in error["message"]
    assert em.ledger == []  # refused, so not billed


@pytest.mark.parametrize("url", ["https://hooks.example.com/starmagic?x=1", "https://hooks.example.com/" + "a" * 2000])
def test_callback_url_https_public_is_accepted(callback_api, url):
    em, client = callback_api
    response = _submit_with_callback(client, url)
    assert response.status_code == 200, response.text
    assert response.json()["id"].startswith("task-unified-") and len(em.ledger) == 1


# --- regressions: each of these was a bug once --------------------------------------------------


@pytest.mark.parametrize("case", OUTPUT_DIRS)
def test_output_dir_out_of_the_project_is_a_usage_error(project, outside, case):
    """SPEC §3: an invalid config exits with 2 and names its location (it used to exit with 1)."""
    res, _ = _output_dir_build(project, outside, case)
    _assert_clean_refusal(res, 2)
    assert "starbuild.yaml:" in res.stderr and "output.dir" in res.stderr


def test_symlinked_prompt_file_out_of_the_project_is_refused(project, outside):
    """A prompt file symlinked out of the project was read and sent as the prompt; refused like
    inputs and axis files."""
    project.config("version: 1\nimages:\n  a:\n    prompt_file: prompts/p.j2\n    size: '1:1'\n")
    (project.root / "prompts").mkdir(parents=True)
    (project.root / "prompts" / "p.j2").symlink_to(outside / "prompt.j2")
    res = project.run("build", "--offline")
    _assert_clean_refusal(res)
    assert "outside the project" in res.stderr or "symlink" in res.stderr
    assert not (project.root / "starbuild.lock").exists()


@pytest.mark.parametrize("url", ["https://2130706433/hook", "https://0x7f000001/hook", "https://127.1/hook",
                                 "https://0177.0.0.1/hook", "https://localhost./hook"])
def test_callback_urls_naming_loopback_in_other_spellings_are_refused(callback_api, url):
    em, client = callback_api
    response = _submit_with_callback(client, url)
    assert response.status_code == 400, response.text
    assert em.ledger == []
