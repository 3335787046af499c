"""Chaos campaign: builds killed with SIGKILL at random moments under a fault mix, then resumed.

Part 1, kills. A project of 12 assets (concurrency 6) is built against the emulator over HTTP
with some latency and a mix of faults. Each trial starts `starbuild build` and sends it SIGKILL
after a random delay (it may also finish first); the next trial resumes it, or moves on to a
fresh set of 12 prompts (the old set's tasks in flight are then orphans the next build must
keep). After every trial: the lockfile parses (or is absent) and `assets/current` (if present)
points at a complete version: every file of its manifest exists with the right byte size.
At the end a clean build (faults off, no kill) of every set used must report every asset as
built or failed with a reason, the ledger must show no prompt accepted twice, and no temp file
(`.download-*.part`, `.vNNNN.tmp-*`, ...) may be left. A submission cut off mid-request is
reported by starbuild as "outcome unknown" and never resubmitted without --retry-unknown: those
are counted as `unknown`, not as duplicates; `unknown_billed` says how many of them the server
had in fact accepted (the others were killed before anything was accepted).

A third of the kills are SIGTERM (what CI sends on cancel) instead of SIGKILL: the build must
end within 15 s (else it counts as a hang) like Ctrl-C, without a traceback.

Part 2, fault kinds. One short build per kind of fault the emulator offers, at a moderate rate:
every asset built or reported failed with a reason, never a traceback, never a hang.

Part 3, budgets. Builds under --max-credits against servers that reserve far more than the
price table says (1.0 per image against an estimate of 0.11), 32 submissions at a time with slow
submit answers, answers with missing, NaN, negative or overflowing usage, and retries of failed
tasks. `overspend` is the most any of them billed divided by its cap: at most 1.

Everywhere: `lost` counts images the server made (completed tasks) that the final lockfile does
not have; `hangs` counts builds that did not end in time.

    python bench/chaos.py [--trials N] [--streams K] [--seed S] [--quick] [--kinds-only | --kills-only | --budget-only]

Prints one summary line: chaos: trials=N duplicates=0 corrupt=0 unknown=K ...
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

KEY = "sk-chaos-not-a-real-key"
OK_STATUSES = {"built", "cached", "resumed"}
UNKNOWN_MARK = "may have been accepted"  # starbuild's words for a submission whose outcome is unknown


def kill_faults():
    """The fault mix of the kill campaign: transport and server faults, and every answer variant."""
    from starbuild.emulator import Faults

    return Faults(rate_429=0.04, rate_429_retry_after=0.03, rate_500=0.08, rate_502=0.03, rate_503=0.03,
                  rate_reset=0.03, rate_slow=0.03, slow_seconds=0.5, rate_results_null=0.2,
                  results_null_seconds=0.3, rate_results_objects=0.3, rate_legacy_envelope=0.3,
                  rate_extra_fields=0.3)


# --- the project and its checks -------------------------------------------------------------------


def write_config(root: Path, sets: list[int], assets: int, concurrency: int) -> None:
    """Sets of ``assets`` images each; set s has its own prompts, so a new set is new work."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "starbuild.yaml").write_text(
        f"version: 1\nprovider:\n  concurrency: {concurrency}\n  task_timeout: 120\n"
        f"images:\n  's{{{{ s }}}}/i{{{{ i }}}}':\n    matrix:\n      s: {sets}\n      i: {list(range(assets))}\n"
        f"    prompt: \"chaos set {{{{ s }}}} image {{{{ i }}}}\"\n    size: '1:1'\n    quality: low\n")


def _prompt_of(name: str) -> str:
    """The prompt write_config gives the asset ``s<set>/i<image>``."""
    s, i = name.removeprefix("s").split("/i")
    return f"chaos set {s} image {i}"


def names_of(sets: list[int], assets: int) -> set[str]:
    return {f"s{s}/i{i}" for s in sets for i in range(assets)}


def consistency_problems(root: Path, output: str = "assets") -> list[str]:
    """Why the project on disk is not consistent: the lockfile, and the version `current` names."""
    problems = []
    lock = root / "starbuild.lock"
    if lock.exists():
        try:
            data = json.loads(lock.read_text())
            if data.get("lockfile_version") != 1 or not isinstance(data.get("assets"), dict):
                problems.append("the lockfile is not a version 1 lockfile")
        except ValueError as exc:
            problems.append(f"the lockfile does not parse: {exc}")
    current = root / output / "current"
    if current.is_symlink():
        try:
            manifest = json.loads((current / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            return problems + [f"current -> {os.readlink(current)} has no readable manifest: {exc}"]
        for name, entry in manifest.get("assets", {}).items():
            for f in entry.get("files", []):
                path = current / f["path"]
                if not path.is_file():
                    problems.append(f"current: {f['path']} of {name} is missing")
                elif path.stat().st_size != f["bytes"]:
                    problems.append(f"current: {f['path']} is {path.stat().st_size} bytes, manifest says {f['bytes']}")
    elif current.exists():
        problems.append("assets/current is not a symlink")
    return problems


def temp_files(root: Path, cache: Path, output: str = "assets") -> list[str]:
    """Files a killed run may leave behind and a later run should have cleaned."""
    found = []
    tmp = cache / "objects" / "tmp"
    if tmp.is_dir():
        found += [str(p) for p in tmp.glob(".download-*.part")]
    out = root / output
    if out.is_dir():
        found += [str(p) for p in out.iterdir() if p.name.startswith(".v") and ".tmp-" in p.name]
        found += [str(p) for p in out.glob(".current.tmp-*")]
    found += [str(p) for p in root.glob(".starbuild.lock.*.tmp")]
    return found


def duplicates(emulator) -> int:
    """Submissions of a prompt beyond the first, not counting resubmissions after a failed task."""
    by_prompt: dict[str, list] = {}
    for entry in emulator.ledger:
        by_prompt.setdefault(entry.request.get("prompt"), []).append(entry)
    extra = 0
    for entries in by_prompt.values():
        for earlier in entries[:-1]:
            task = emulator.tasks.get(earlier.task_id)
            if task is None or task.outcome == "completed":
                extra += 1  # an accepted task that made its image was paid for again
    return extra


@dataclass
class Verdict:
    """How one completed build reported its assets."""

    unreported: list[str] = field(default_factory=list)  # neither built nor failed with a reason
    unknown: list[str] = field(default_factory=list)     # failed: submission outcome unknown
    failed: list[str] = field(default_factory=list)      # failed with another reason
    problems: list[str] = field(default_factory=list)


def judge(returncode: int, stdout: str, stderr: str, expected: set[str]) -> Verdict:
    v = Verdict()
    if "Traceback" in stderr or "Traceback" in stdout:
        v.problems.append(f"a traceback: {stderr[-1500:]}")
    if returncode not in (0, 1):
        v.problems.append(f"exit code {returncode}: {stderr[-800:]}")
        return v
    try:
        report = json.loads(stdout)
    except ValueError:
        v.problems.append(f"--json printed no report: {stdout[-300:]!r} {stderr[-300:]!r}")
        return v
    seen = {}
    for a in report["assets"]:
        seen[a["name"]] = a
    for name in sorted(expected):
        a = seen.get(name)
        if a is None:
            v.unreported.append(name)
        elif a["status"] in OK_STATUSES and a["files"]:
            continue
        elif a["status"] in ("failed", "skipped") and (a.get("error") or a.get("reason")):
            text = a.get("error") or a.get("reason")
            (v.unknown if UNKNOWN_MARK in text else v.failed).append(f"{name}: {text}")
        else:
            v.unreported.append(f"{name} ({a['status']}, no reason)")
    if (returncode == 0) != (not v.unknown and not v.failed):
        v.problems.append(f"exit code {returncode} with {len(v.unknown) + len(v.failed)} failures")
    return v


# --- running builds -------------------------------------------------------------------------------


def cli_env(url: str, cache: Path) -> dict:
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "STARBUILD_CACHE_DIR": str(cache), "STARMAGIC_API_KEY": KEY,
           "STARMAGIC_BASE_URL": url, "STARMAGIC_FILES_URL": url}
    return env


def start_build(root: Path, env: dict, logs: Path, *args: str) -> tuple[subprocess.Popen, Path, Path]:
    out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "starbuild", "-C", str(root), "build", "--json", *args],
                                env=env, stdout=o, stderr=e)
    return proc, out, err


@dataclass
class Summary:
    trials: int = 0
    killed: int = 0
    completed: int = 0
    duplicates: int = 0
    corrupt: int = 0
    unknown: int = 0
    unknown_billed: int = 0   # of the unknown: the server had accepted (and billed) the submission
    failed: int = 0
    unreported: int = 0
    tracebacks: int = 0
    temp_files: int = 0
    assets: int = 0
    submissions: int = 0
    fault_kinds: int = 0
    fault_kinds_ok: int = 0
    lost: int = 0           # images the server made that the final lockfile does not have
    hangs: int = 0          # builds that did not end in time
    sigterms: int = 0       # kills by SIGTERM (the others are SIGKILL)
    slow_stops: int = 0     # of those, builds that ended by their 10 s watchdog, not on their own
    budget_runs: int = 0
    overspend: float = 0.0  # the most billed / cap over the budget runs
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.corrupt or self.unreported or self.tracebacks or self.temp_files
                    or self.failed or self.problems or self.lost > self.unknown_billed or self.hangs
                    or self.slow_stops
                    or self.overspend > 1 + 1e-9) and self.fault_kinds_ok == self.fault_kinds

    def line(self) -> str:
        skip = {"problems", "seconds"}
        parts = [f"{f.name}={round(getattr(self, f.name), 3)}" for f in fields(self) if f.name not in skip]
        return "chaos: " + " ".join(parts) + f" seconds={self.seconds:.0f} result={'ok' if self.ok else 'FAILED'}"


def merge(into: Summary, other: Summary) -> None:
    for f in fields(Summary):
        if f.name in ("problems",):
            into.problems += other.problems
        elif f.name == "overspend":
            into.overspend = max(into.overspend, other.overspend)
        elif f.name not in ("seconds", "fault_kinds", "fault_kinds_ok"):
            setattr(into, f.name, getattr(into, f.name) + getattr(other, f.name))


def run_kills(summary: Summary, trials: int, seed: int = 0, streams: int = 1, log=print, **kwargs) -> None:
    """Part 1 in ``streams`` independent projects (each with its own emulator) side by side.

    Builds mostly wait for the emulator, so a few streams share two cores well; ``trials`` is
    the total over all streams.
    """
    quiet_server_logs()
    shares = [trials // streams + (i < trials % streams) for i in range(streams)]
    parts = [Summary() for _ in shares]
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda i: run_kill_stream(parts[i], shares[i], seed=seed * 1000 + i, name=f"stream {i}",
                                                log=log, **kwargs), range(streams)))
    for part in parts:
        merge(summary, part)


def run_kill_stream(summary: Summary, trials: int, seed: int = 0, assets: int = 12, concurrency: int = 6,
                    latency: float = 0.3, delay: tuple[float, float] = (0.4, 4.5), new_set: float = 0.5,
                    workdir: Path | None = None, name: str = "", log=print) -> None:
    """``trials`` builds of one project killed at random moments, then a clean build of every set used."""
    from starbuild.emulator import Emulator, EmulatorConfig, Faults, serve_in_thread

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root, cache, logs = Path(tmp) / "proj", Path(tmp) / "cache", Path(tmp) / "logs"
        logs.mkdir()
        emulator = Emulator(EmulatorConfig(latency=latency, render="plain", seed=seed, faults=kill_faults()))
        sets = [0]
        with serve_in_thread(emulator) as url:
            env = cli_env(url, cache)
            for trial in range(trials):
                if trial and rng.random() < new_set:
                    sets.append(sets[-1] + 1)
                write_config(root, [sets[-1]], assets, concurrency)
                proc, out, err = start_build(root, env, logs / f"t{trial}")
                wait = rng.uniform(*delay)
                sig = signal.SIGTERM if rng.random() < 1 / 3 else signal.SIGKILL
                try:
                    proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    stop(proc, sig, summary, f"{name} trial {trial}", err)
                summary.trials += 1
                # -SIGTERM: the signal came while Python was starting or shutting down, when its
                # default action applies (nothing is in flight then).
                if proc.returncode in (-signal.SIGKILL, -signal.SIGABRT, -signal.SIGTERM, 143):
                    summary.killed += 1
                    summary.sigterms += proc.returncode in (143, -signal.SIGTERM)
                    if "did not stop within" in err.read_text(errors="replace"):
                        summary.slow_stops += 1
                    if "Traceback" in err.read_text(errors="replace"):
                        summary.tracebacks += 1
                        summary.problems.append(f"trial {trial}: a traceback before the kill")
                else:
                    summary.completed += 1
                    v = judge(proc.returncode, out.read_text(errors="replace"), err.read_text(errors="replace"),
                              names_of([sets[-1]], assets))
                    _count(summary, v, f"trial {trial}")
                problems = consistency_problems(root)
                if problems:
                    summary.corrupt += 1
                    summary.problems += [f"trial {trial}: {p}" for p in problems]
                log(f"{name} trial {trial:3d}: set {sets[-1]:2d}, "
                    f"{'killed after ' + format(wait, '.2f') + ' s' if proc.returncode in (-signal.SIGKILL, -signal.SIGTERM, 143) else 'exit ' + str(proc.returncode)}, "
                    f"{len(emulator.ledger)} submissions so far")
            # The clean build: every set used, no faults, no kill, more concurrency to be quick.
            emulator.config.faults = Faults()
            write_config(root, sets, assets, concurrency)
            proc, out, err = start_build(root, env, logs / "final", "--concurrency", "24")
            proc.wait(timeout=600)
            v = judge(proc.returncode, out.read_text(errors="replace"), err.read_text(errors="replace"),
                      names_of(sets, assets))
            _count(summary, v, "final build")
            log(f"{name} final build: exit {proc.returncode}, {len(sets) * assets} assets, {len(v.unknown)} unknown, "
                f"{len(v.failed)} failed, {len(emulator.ledger)} submissions")
            summary.unknown += len(v.unknown)
            summary.lost += lost_images(emulator, root)
            accepted = {e.request.get("prompt") for e in emulator.ledger}
            summary.unknown_billed += sum(_prompt_of(u.split(": ", 1)[0]) in accepted for u in v.unknown)
            summary.assets = len(sets) * assets
        problems = consistency_problems(root)
        if problems:
            summary.corrupt += 1
            summary.problems += [f"final: {p}" for p in problems]
        leftovers = temp_files(root, cache)
        summary.temp_files = len(leftovers)
        summary.problems += [f"left behind: {p}" for p in leftovers]
        summary.duplicates += duplicates(emulator)
        summary.submissions += len(emulator.ledger)


def stop(proc: subprocess.Popen, sig: int, summary: Summary, where: str, err: Path | None = None) -> None:
    """Kill a build: SIGKILL, or SIGTERM after which it must end on its own within 15 s.

    A build still running then is a hang: SIGABRT makes it print where each thread was
    (PYTHONFAULTHANDLER is set), and that goes into the problem.
    """
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15 if sig == signal.SIGTERM else None)
    except subprocess.TimeoutExpired:
        summary.hangs += 1
        proc.send_signal(signal.SIGABRT)
        proc.wait()
        stack = err.read_text(errors="replace")[-3000:] if err is not None else ""
        summary.problems.append(f"{where}: still running 15 s after SIGTERM: {stack}")


def lost_images(emulator, root: Path) -> int:
    """Images the server made (completed tasks) whose prompt the lockfile has no files for."""
    try:
        assets = json.loads((root / "starbuild.lock").read_text()).get("assets", {})
    except (OSError, ValueError):
        assets = {}
    have = {_prompt_of(name) for name, entry in assets.items() if entry.get("files")}
    lost = 0
    for entry in emulator.ledger:
        task = emulator.tasks.get(entry.task_id)
        if task is not None and task.outcome == "completed" and entry.request.get("prompt") not in have:
            lost += 1
    return lost


def _count(summary: Summary, v: Verdict, where: str) -> None:
    summary.unreported += len(v.unreported)
    summary.tracebacks += sum("traceback" in p for p in v.problems)
    summary.problems += [f"{where}: {p}" for p in v.problems]
    summary.problems += [f"{where}: not reported: {n}" for n in v.unreported]
    if where == "final build":
        summary.failed += len(v.failed)
        summary.problems += [f"{where}: failed: {n}" for n in v.failed]


def injected_faults(emulator) -> int:
    """Faults the emulator injected (its ``injected`` counter, or ``fault_*`` counters), plus 429s."""
    injected = getattr(emulator, "injected", None)
    if injected is None:
        injected = {k: n for k, n in emulator.counters.items() if k.startswith("fault_")}
    return sum(injected.values()) + emulator.counters.get("status_429", 0)


class NoDisconnects(logging.Filter):
    """Drops the server's log records of clients that went away mid-request."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return type(exc).__name__ not in ("ClientDisconnect", "CancelledError")


def quiet_server_logs() -> None:
    """A client killed mid-request makes the server log the disconnect with a traceback: not the
    client's, so keep it off the campaign's output (a filter, which uvicorn's logging set-up keeps)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, NoDisconnects) for f in logger.filters):
        logger.addFilter(NoDisconnects())


# --- part 2: one build per fault kind -------------------------------------------------------------


def fault_kinds(rate: float = 0.3) -> dict[str, object]:
    """One Faults per kind the emulator offers, each at a moderate rate."""
    from starbuild.emulator import Faults
    from starbuild.emulator.config import rate_fields

    # The older envelope only shows on error answers: give it 429s to wrap. They carry a
    # Retry-After header, which wins over the envelope's "retry after 60 seconds" advice.
    kinds = {"legacy_envelope": Faults(rate_legacy_envelope=max(rate, 0.5), rate_429_retry_after=rate)}
    for name in rate_fields():
        extra = {"slow_seconds": 0.5} if name == "rate_slow" else {}
        if name == "rate_results_null":
            extra = {"results_null_seconds": 0.5}
        if name == "rate_slow_submit":
            extra = {"slow_submit_seconds": 0.5}
        if name == "rate_escape_text":
            extra = {"rate_task_failed": rate}  # escape sequences ride on failure messages
        if name.startswith("rate_drip"):
            extra = {"drip_seconds": 0.002}  # a few seconds a body: slow, within every deadline
        kinds.setdefault(name.removeprefix("rate_"), Faults(**{name: rate}, **extra))
    kinds["max_unfinished"] = Faults(max_unfinished=3)
    kinds["reserve_per_image"] = Faults(reserve_per_image=1.0)
    return kinds


def run_fault_kind(kind: str, faults, assets: int = 12, concurrency: int = 6, latency: float = 0.2,
                   seed: int = 0, workdir: Path | None = None) -> dict:
    from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root, cache = Path(tmp) / "proj", Path(tmp) / "cache"
        write_config(root, [0], assets, concurrency)
        emulator = Emulator(EmulatorConfig(latency=latency, render="plain", seed=seed, faults=faults))
        with serve_in_thread(emulator) as url:
            proc, out, err = start_build(root, cli_env(url, cache), Path(tmp) / "log")
            try:
                proc.wait(timeout=240)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return {"kind": kind, "ok": False, "hang": True, "problems": ["did not finish within 240 s"]}
            text = out.read_text(errors="replace") + err.read_text(errors="replace")
            v = judge(proc.returncode, out.read_text(errors="replace"), err.read_text(errors="replace"),
                      names_of([0], assets))
            lost = lost_images(emulator, root)
        problems = v.problems + [f"not reported: {n}" for n in v.unreported] + consistency_problems(root)
        if KEY in text:
            problems.append("the API key was printed")
        if "\x1b" in text or "\x07" in text:
            problems.append("a control character from the server reached the output")
        dup = duplicates(emulator)
        if dup:
            problems.append(f"{dup} duplicate submissions")
        injected = injected_faults(emulator)
        built = assets - len(v.unknown) - len(v.failed)
        if lost:
            problems.append(f"{lost} paid images lost")
        return {"kind": kind, "ok": not problems, "problems": problems, "built": built, "lost": lost,
                "failed": len(v.failed), "unknown": len(v.unknown), "exit": proc.returncode,
                "injected": injected, "reasons": sorted({f.split(": ", 1)[1][:70] for f in v.failed + v.unknown})}


def run_fault_kinds(summary: Summary, rate: float = 0.3, parallel: int = 4, seed: int = 0, log=print) -> list[dict]:
    quiet_server_logs()
    kinds = fault_kinds(rate)
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(lambda item: run_fault_kind(item[0], item[1], seed=seed), kinds.items()))
    for r in results:
        summary.fault_kinds += 1
        summary.fault_kinds_ok += r["ok"]
        summary.hangs += r.get("hang", False)
        summary.lost += r.get("lost", 0)
        summary.tracebacks += sum("traceback" in p for p in r["problems"])
        summary.problems += [f"fault {r['kind']}: {p}" for p in r["problems"]]
        summary.duplicates += sum(int(p.split()[0]) for p in r["problems"] if p.endswith("duplicate submissions"))
        log(f"fault {r['kind']:<18} {'ok' if r['ok'] else 'FAILED'}: exit {r.get('exit')}, built {r.get('built')}, "
            f"failed {r.get('failed')}, unknown {r.get('unknown')}, lost {r.get('lost')}, faults injected {r.get('injected')}"
            + (f"; reasons: {'; '.join(r['reasons'])}" if r.get("reasons") else ""))
    return results


# --- part 3: budgets ------------------------------------------------------------------------------


def budget_cases() -> dict[str, tuple]:
    """name -> (Faults, assets, concurrency, cap, extra build arguments)."""
    from starbuild.emulator import Faults

    odd_usage = dict(rate_usage_missing=0.3, rate_usage_nan=0.2, rate_usage_negative=0.2, rate_usage_huge=0.1,
                     rate_progress_overflow=0.2)
    return {
        "over-reserving, 32 in flight, slow answers": (
            Faults(reserve_per_image=1.0, rate_slow_submit=1.0, slow_submit_seconds=0.3), 40, 32, 7.0, ()),
        "over-reserving with odd usage": (
            Faults(reserve_per_image=1.0, rate_slow_submit=0.5, slow_submit_seconds=0.3, **odd_usage), 40, 32, 7.0, ()),
        "retried failures": (
            Faults(reserve_per_image=1.0, rate_task_failed=0.5, failure_codes=("service_error",)), 20, 8, 7.0,
            ("--retry-failed", "3")),
        "priced as the table says": (Faults(), 80, 32, 10.0, ()),
    }


def run_budget_case(name: str, faults, assets: int, concurrency: int, cap: float, extra: tuple,
                    seed: int = 0) -> dict:
    from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "proj", Path(tmp) / "cache"
        write_config(root, [0], assets, concurrency)
        emulator = Emulator(EmulatorConfig(latency=0.2, render="plain", seed=seed, faults=faults))
        with serve_in_thread(emulator) as url:
            proc, out, err = start_build(root, cli_env(url, cache), Path(tmp) / "log", "--max-credits", str(cap), *extra)
            try:
                proc.wait(timeout=240)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return {"case": name, "hang": True, "problems": ["did not finish within 240 s"], "ratio": 0.0}
            text, errors = out.read_text(errors="replace"), err.read_text(errors="replace")
        billed = sum(e.credits for e in emulator.ledger)
        problems = [f"a traceback: {errors[-800:]}"] if "Traceback" in errors + text else []
        if proc.returncode not in (0, 1, 3):
            problems.append(f"exit {proc.returncode}: {errors[-300:]}")
        lost = lost_images(emulator, root)
        if lost:
            problems.append(f"{lost} paid images lost")
        return {"case": name, "exit": proc.returncode, "billed": billed, "cap": cap, "ratio": billed / cap,
                "submissions": len(emulator.ledger), "lost": lost, "duplicates": duplicates(emulator),
                "problems": problems}


def run_budgets(summary: Summary, seed: int = 0, log=print) -> list[dict]:
    quiet_server_logs()
    cases = budget_cases()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda item: run_budget_case(item[0], *item[1], seed=seed), cases.items()))
    for r in results:
        summary.budget_runs += 1
        summary.overspend = max(summary.overspend, r["ratio"])
        summary.hangs += r.get("hang", False)
        summary.lost += r.get("lost", 0)
        summary.duplicates += r.get("duplicates", 0)
        summary.problems += [f"budget {r['case']}: {p}" for p in r["problems"]]
        log(f"budget {r['case']:<45} exit {r.get('exit')}, {r.get('submissions')} submissions, billed "
            f"{r.get('billed', 0):g} of a cap of {r.get('cap', 0):g} ({r['ratio']:.2f}), lost {r.get('lost')}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None, help="kill trials (default 100, 20 with --quick)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=0.3, help="rate of each fault kind in part 2")
    parser.add_argument("--streams", type=int, default=4, help="independent projects killed side by side")
    parser.add_argument("--kills-only", action="store_true")
    parser.add_argument("--kinds-only", action="store_true")
    parser.add_argument("--budget-only", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true", help="only the summary and the problems")
    args = parser.parse_args()
    trials = args.trials if args.trials is not None else (20 if args.quick else 100)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    start = time.monotonic()
    summary = Summary()
    only = args.kills_only or args.kinds_only or args.budget_only
    if args.kills_only or not only:
        run_kills(summary, trials, seed=args.seed, streams=args.streams, log=log)
    if args.kinds_only or not only:
        run_fault_kinds(summary, rate=args.rate, seed=args.seed, log=log)
    if args.budget_only or not only:
        run_budgets(summary, seed=args.seed, log=log)
    summary.seconds = time.monotonic() - start
    for problem in summary.problems[:40]:
        print(f"problem: {problem}")
    print(summary.line())
    sys.exit(0 if summary.ok else 1)


if __name__ == "__main__":
    main()
