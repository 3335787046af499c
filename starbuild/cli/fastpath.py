"""The command line's entry point, with the plan cache in front of it.

``starbuild plan`` and a ``starbuild build`` with nothing to do answer the same bytes every time
until a file they read changes. Their answer (stdout, stderr, exit code) is kept in the cache
folder under a key of the exact command line, working directory and relevant environment, next to
a fingerprint of every file the plan could have read: the whole project tree (config, prompt
files, included templates, axis files, inputs, masks, lockfile; the output folder itself and the
``current`` link, not the immutable versions in it), the object store's folders and the
journal's in-flight records, and starbuild's own source files. The answer is replayed only when
the fingerprint matches exactly and nothing in it was modified within the last DISTRUST seconds
(a file can change twice within one timestamp tick); any other case runs the command normally,
which records a fresh answer when the command changed nothing. A project tree of more than
MAX_ENTRIES entries is never cached. This module imports nothing heavy: a hit costs a few stats.

``starbuild --help`` prints text kept in cli/helptext.py (tests keep it equal to click's).
"""

from __future__ import annotations

import os
import sys

DISTRUST = 2.0
MAX_ENTRIES = 20_000
FORMAT = 1
_CACHEABLE = {"plan": {"--json", "--offline"}, "build": {"--offline", "--frozen"}}
_GLOBAL_VALUE = {"-C", "-f"}
_ENV = ("STARBUILD_CACHE_DIR", "NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS", "LANG", "LC_ALL", "PYTHONIOENCODING")


class _Tree:
    """Stats of every entry under the roots, skipping some folders, as one list."""

    def __init__(self, skip: set[str]):
        self.skip = skip
        self.rows: list[tuple] = []
        self.newest = 0.0
        self.seen: set[tuple[int, int]] = set()

    def add(self, path: str, st: os.stat_result) -> None:
        self.rows.append((path, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        self.newest = max(self.newest, st.st_mtime, st.st_ctime)

    def stat(self, path: str) -> None:
        try:
            self.add(path, os.stat(path))
        except OSError:
            self.rows.append((path, None))

    def walk(self, top: str) -> bool:
        """Add every entry under ``top``; False when there are too many."""
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
                if (st.st_dev, st.st_ino) in self.seen:
                    continue
                self.seen.add((st.st_dev, st.st_ino))
                self.add(folder, st)
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                self.rows.append((folder, None))
                continue
            for entry in entries:
                if entry.path in self.skip:
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    self.rows.append((entry.path, None))
                    continue
                if entry.is_dir():
                    stack.append(entry.path)
                else:
                    self.add(entry.path, st)
            if len(self.rows) > MAX_ENTRIES:
                return False
        return True


def fingerprint(root: str, cache: str, output: str) -> tuple[str, float] | None:
    """(digest, newest modification time) of everything a plan of this project could read; None: too big."""
    import hashlib

    output_dir = os.path.join(root, output)
    tree = _Tree({output_dir, cache, os.path.join(root, ".git"), os.path.join(root, ".starbuild")})
    if not tree.walk(root):
        return None
    tree.stat(output_dir)
    try:
        tree.rows.append(("current", os.readlink(os.path.join(output_dir, "current"))))
    except OSError:
        tree.rows.append(("current", None))
    objects = os.path.join(cache, "objects")
    tree.stat(objects)
    for folder in _listdir(objects):
        tree.stat(os.path.join(objects, folder))
    pending = _inflight(os.path.join(cache, "journal", "inflight", "cache.db"))
    if pending is None:
        return None
    tree.rows.append(("inflight", pending))
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder in ["", *sorted(d for d in _listdir(package) if not d.startswith(("_", ".")))]:
        for name in _listdir(os.path.join(package, folder)):
            if name.endswith(".py"):
                tree.stat(os.path.join(package, folder, name))
    return hashlib.sha256(repr(tree.rows).encode()).hexdigest(), tree.newest


def _inflight(db: str) -> int | None:
    """How many tasks the journal has in flight (its files change on every open, so they are read)."""
    if not os.path.exists(db):
        return 0
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        try:
            return con.execute("SELECT COUNT(*) FROM Cache").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _shape(argv: list[str]) -> tuple[str, str | None, str | None] | None:
    """(command, -C DIR, -f FILE) when this command line may be answered from the cache."""
    command = directory = file = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _GLOBAL_VALUE and i + 1 < len(argv):
            if arg == "-C":
                directory = argv[i + 1]
            else:
                file = argv[i + 1]
            i += 2
            continue
        if command is None and arg in _CACHEABLE:
            command = arg
        elif arg not in ("-q", "--quiet") and (command is None or arg not in _CACHEABLE[command]):
            return None
        i += 1
    return (command, directory, file) if command else None


def _uses_remote(config: str) -> bool:
    """Whether a config may name a remote cache (a plain look at its text: a false alarm only costs speed)."""
    try:
        with open(config, "rb") as fh:
            return b"remote" in fh.read()
    except OSError:
        return False


class PlanCache:
    """The cached answer of one command line in one project."""

    def __init__(self, argv: list[str], directory: str | None, file: str | None):
        import hashlib

        if file is not None:
            config = file if directory is None or os.path.isabs(file) else os.path.join(directory, file)
        else:
            config = os.path.join(directory or ".", "starbuild.yaml")
        self.root = os.path.dirname(os.path.realpath(config))
        override = os.environ.get("STARBUILD_CACHE_DIR")
        self.cache = os.path.realpath(override) if override else os.path.join(self.root, ".starbuild")
        ttys = tuple(s.isatty() for s in (sys.stdin, sys.stdout, sys.stderr))
        key = repr((FORMAT, argv, os.getcwd(), [os.environ.get(k) for k in _ENV], ttys, sys.version))
        self.path = os.path.join(self.cache, "plan-cache", hashlib.sha256(key.encode()).hexdigest()[:32])
        # Tables and live progress on a terminal are not replayed, nor the answers of a project with
        # a shared remote cache: they depend on what teammates pushed since (SPEC.md §7).
        self.usable = not any(ttys[1:]) and not _uses_remote(config)

    def load(self) -> dict | None:
        import marshal

        try:
            with open(self.path, "rb") as fh:
                entry = marshal.load(fh)
        except (OSError, EOFError, ValueError, TypeError):
            return None
        return entry if isinstance(entry, dict) and entry.get("format") == FORMAT else None

    def replay(self) -> int | None:
        """The exit code after writing the cached answer, or None when it may not be used."""
        import time

        entry = self.load() if self.usable else None
        if entry is None:
            return None
        found = fingerprint(self.root, self.cache, entry["output"])
        if found is None or entry["fingerprint"] is None or found[0] != entry["fingerprint"] \
                or time.time() - found[1] < DISTRUST:
            return None
        sys.stdout.write(entry["stdout"])
        sys.stderr.write(entry["stderr"])
        return entry["code"]

    def store(self, before: tuple[str, float] | None, output: str, stdout: str, stderr: str, code: int) -> None:
        """Keep an answer when the command changed nothing and nothing it read is recent."""
        import marshal
        import time

        after = fingerprint(self.root, self.cache, output)
        if before is None or after != before or time.time() - after[1] < DISTRUST:
            after = (None, 0.0)  # not replayable; kept only to remember the output folder
        entry = {"format": FORMAT, "fingerprint": after[0], "output": output, "stdout": stdout,
                 "stderr": stderr, "code": code}
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                marshal.dump(entry, fh)
            os.replace(tmp, self.path)
        except OSError:
            pass


class _Tee:
    """A text stream that also keeps what was written."""

    def __init__(self, stream):
        self._stream = stream
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _skip_httpx_cli() -> None:
    """httpx imports its own command line (click, rich, pygments: a third of its import time) when
    those are installed, as they are here; starbuild's command line never uses it."""
    if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
        import types

        stub = types.ModuleType("httpx._main")

        def main(*args: object, **kwargs: object) -> None:
            raise SystemExit("the httpx command line is not loaded inside starbuild")

        stub.main = main  # type: ignore[attr-defined]
        sys.modules["httpx._main"] = stub


def _no_pydantic_plugins() -> None:
    """starbuild's config models are its own business: no pydantic plugin instruments them. Looking
    for plugins means importlib.metadata and a scan of every installed package's entry points,
    12 ms of every start; the stub answers "none", as PYDANTIC_DISABLE_PLUGINS=1 would."""
    if "pydantic" not in sys.modules and "pydantic.plugin._loader" not in sys.modules:
        import types

        stub = types.ModuleType("pydantic.plugin._loader")
        stub.get_plugins = lambda: ()  # type: ignore[attr-defined]
        sys.modules["pydantic.plugin._loader"] = stub


def run() -> None:
    """The program (console script and ``python -m starbuild``): ``entry``, then out at once.

    The interpreter's own teardown frees every module and object one by one: 30-50 ms after a
    build, as much as a whole cached no-op. When no other thread is left that could still have work
    (a pool, a server), the atexit handlers run, the standard streams are flushed and the process
    leaves; otherwise it exits the usual way. Every file starbuild writes is closed (and synced)
    before the command returns, so nothing buffered is lost."""
    try:
        entry()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    import threading

    if threading.active_count() > 1:
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    import atexit

    atexit._run_exitfuncs()  # noqa: SLF001 (they run once: the list is emptied)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: the usual exit says so and sets its code
        sys.exit(code)
    os._exit(code)


def entry() -> None:
    """``starbuild``: the cached answer when it is valid, else the click command line."""
    argv = sys.argv[1:]
    for name in ("stdout", "stderr"):  # started with that descriptor closed: what it says goes nowhere
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 (for the life of the process)
    _skip_httpx_cli()
    _no_pydantic_plugins()
    if argv in (["--help"], ["-h"]) and _help_fits():
        from starbuild.cli.helptext import HELP

        sys.stdout.write(HELP.format(prog=_prog()))
        sys.exit(0)
    shape = None if os.environ.get("STARBUILD_NO_PLAN_CACHE") else _shape(argv)
    cache = None
    if shape:
        try:
            cache = PlanCache(argv, shape[1], shape[2])
            code = cache.replay() if cache.usable else None
        except Exception:  # the cache is only a shortcut: anything odd runs the command in full
            cache = code = None
        if code is not None:
            sys.stdout.flush()
            sys.exit(code)
        if cache is not None and cache.usable:
            _run_recorded(cache)
    from starbuild.cli.main import main

    main()


def _prog() -> str:
    """The program name as click shows it."""
    main = sys.modules.get("__main__")
    if getattr(main, "__package__", None) and os.path.basename(sys.argv[0]) == "__main__.py":
        return f"python -m {main.__package__}"
    return os.path.basename(sys.argv[0])


def _help_fits() -> bool:
    """click wraps help to min(terminal width, 80) - 2 columns: the kept text fits 80 or more."""
    columns = os.environ.get("COLUMNS")
    if columns:
        return columns.isdigit() and int(columns) >= 80
    if sys.stdout.isatty():
        try:
            return os.get_terminal_size(sys.stdout.fileno()).columns >= 80
        except OSError:
            return False
    return True


def _run_recorded(cache: PlanCache) -> None:
    """Run the command and keep its answer when it may be replayed; exits like the command.

    The fingerprint is taken before the command reads anything, with the output folder of the
    last answer (or the default); a command whose config names another one is not kept, but the
    folder is, so that the next run fingerprints the right tree.
    """
    from starbuild.cli import main as cli

    guess = (cache.load() or {}).get("output", "assets")
    try:
        before = fingerprint(cache.root, cache.cache, guess)
    except Exception:
        before = None
    cli.PLAN_CACHE_HOOK = hook = {}
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    sys.stdout, sys.stderr = out, err
    code: object = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.stdout, sys.stderr = out._stream, err._stream
        cli.PLAN_CACHE_HOOK = None
    if code in (0, None) and hook.get("cacheable"):
        if hook["output"] != guess:
            before = None
        try:
            cache.store(before, hook["output"], "".join(out.parts), "".join(err.parts), code or 0)
        except Exception:
            pass  # not kept; the command's own answer stands
    sys.exit(code)
