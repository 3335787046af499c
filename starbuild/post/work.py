"""One unit of processing work and the process pool that runs many of them.

A Job is one source image: its delivered file (the steps), its variants and its placeholder, decoded
once. Workers write results into the object store's temp folder and return their records; the
parent moves them into the store. Little work runs inline: a pool costs a process start.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# Below this many output pixels a pool's start-up costs more than it saves.
INLINE_PIXELS = 6_000_000


@dataclass(frozen=True)
class Job:
    """Everything a worker needs, picklable: paths, canonical steps, what is missing."""

    source: str                       # the file the steps start from
    steps: tuple = ()                 # canonical step dicts; empty: the source is delivered as is
    meta: tuple = ()                  # provenance written into the delivered file, as (key, value) pairs
    delivered: str | None = None      # an already processed delivered file (skips the steps)
    variants: tuple = ()              # (width, format, quality) still missing
    placeholder: bool = False         # a placeholder data URL is missing
    tmp_dir: str = ""
    pixels: int = 1024 * 1024         # an estimate of the work, to choose inline or pool


@dataclass
class JobResult:
    delivered: dict[str, Any] | None = None
    variants: list[dict[str, Any] | None] = field(default_factory=list)
    placeholder: str | None = None
    width: int = 0
    height: int = 0
    error: str | None = None


def _write(data: bytes, tmp_dir: str, fmt: str, width: int, height: int) -> dict[str, Any]:
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=".part")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return {"tmp": tmp, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "width": width,
            "height": height, "format": fmt}


def run_job(job: Job) -> JobResult:
    """Process one source image; a user-visible problem becomes ``error``, never an exception."""
    from PIL import Image

    from starbuild.post.encode import encode, placeholder_url
    from starbuild.post.schema import Step
    from starbuild.post.steps import apply_steps

    try:
        result = JobResult()
        with Image.open(job.delivered or job.source) as opened:
            full = opened.size
            if not job.variants and (job.delivered or not job.steps):
                opened.draft("RGB", (128, 128))  # only a placeholder: JPEG decodes at a fraction of its size
            opened.load()
            img = opened
            if job.steps and not job.delivered:
                steps = [Step.model_validate(s) for s in job.steps]
                img, state = apply_steps(opened, steps)
                fmt = state.get("format")
                kind = fmt.type if fmt else "png"
                data = encode(img, kind, quality=fmt.quality if fmt else None, lossless=bool(fmt and fmt.lossless),
                              meta=dict(job.meta))
                result.delivered = _write(data, job.tmp_dir, kind, img.width, img.height)
            elif job.variants and img.mode not in ("RGB", "RGBA"):
                img = img.convert("RGBA")
            result.width, result.height = img.size if result.delivered is not None else full
            scaled: dict[int, object] = {}  # one resize per width, shared by its formats
            for width, kind, quality in job.variants:
                result.variants.append(_variant(img, width, kind, quality, job.tmp_dir, encode, scaled))
            if job.placeholder:
                result.placeholder = placeholder_url(img)
        return result
    except (OSError, ValueError, SyntaxError) as exc:  # undecodable source, codec refusal
        return JobResult(error=f"{type(exc).__name__}: {exc}")


def _variant(img, width: int, kind: str, quality: int | None, tmp_dir: str, encode,
             scaled: dict) -> dict[str, Any] | None:
    from PIL import Image

    if width > img.width:  # never upscale
        return None
    height = max(1, round(img.height * width / img.width))
    if width not in scaled:
        scaled[width] = img if width == img.width else img.resize((width, height), Image.Resampling.LANCZOS)
    return _write(encode(scaled[width], kind, quality=quality), tmp_dir, kind, width, height)


_POOL: ProcessPoolExecutor | None = None


def _pool(workers: int) -> ProcessPoolExecutor:
    """One pool per process, kept for the next build (watch); forkserver: safe beside threads."""
    global _POOL
    if _POOL is None or _POOL._max_workers != workers:  # noqa: SLF001
        import multiprocessing

        if _POOL is not None:
            _POOL.shutdown(wait=False, cancel_futures=True)
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["PIL.Image", "starbuild.post.steps", "starbuild.post.encode"])
        _POOL = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    return _POOL


def workers_for(jobs: list[Job], cores: int | None = None) -> int:
    """How many processes to use: 0 (inline) when the work is small or there is one core."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    work = sum(j.pixels * (1 + len(j.variants)) for j in jobs)
    if cores < 2 or len(jobs) < 2 or work < INLINE_PIXELS:
        return 0
    return min(cores, len(jobs))


def run_jobs(jobs: list[Job], workers: int | None = None) -> list[JobResult]:
    """Results in job order; inline for little work, else over a process pool."""
    workers = workers_for(jobs) if workers is None else workers
    if workers <= 0:
        return [run_job(j) for j in jobs]
    from concurrent.futures.process import BrokenProcessPool

    global _POOL
    try:
        pool = _pool(workers)
        chunk = max(1, len(jobs) // (workers * 8))
        return list(pool.map(run_job, jobs, chunksize=chunk))
    except (BrokenProcessPool, OSError):
        # A worker died (killed, out of memory) or no process could start: finish inline, which is
        # slower but never loses the build; jobs are pure, so running one again is safe.
        if _POOL is not None:
            _POOL.shutdown(wait=False, cancel_futures=True)
        _POOL = None
        return [run_job(j) for j in jobs]
