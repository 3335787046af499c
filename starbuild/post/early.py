"""Placeholders made while the build still runs: each stored image's, on one worker thread.

An asset without processing publishes its source image as it is, and that image's placeholder
(SPEC.md §8) depends on nothing else. So it is made as soon as the image is stored, beside the
downloads still under way, and kept in the derived index, where the publish step finds it
(post/deliver.py) instead of making it after the last image. One thread: Pillow leaves the GIL while
it decodes, converts and encodes, so this work takes the other core, and one decoded image at a
time keeps memory flat. Whatever fails here is left to the publish step, which makes it again.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starbuild.config.project import Project
from starbuild.post.deliver import placeholder_key
from starbuild.post.recipe import recipe_for
from starbuild.post.work import Job, run_job
from starbuild.store.derived import DerivedIndex
from starbuild.store.objects import ObjectStore


class EarlyPlaceholders:
    """``stored(name, files)`` starts the placeholders; ``finish()`` waits for them."""

    def __init__(self, project: Project, store: ObjectStore, templates: dict[str, str]):
        self.project, self.store, self.templates = project, store, templates
        self.index = DerivedIndex(store.root.parent, store)
        self._plain: dict[str, bool] = {}  # template -> published as it is (no steps, no variants)
        self._pending: list[asyncio.Future] = []
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def stored(self, name: str, files: list[dict[str, Any]]) -> None:
        template = self.templates.get(name)
        if template is None or self._closed:
            return
        if template not in self._plain:
            self._plain[template] = not recipe_for(self.project, template).active
        if not self._plain[template]:
            return  # the placeholder is of the processed file, made with it
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="placeholders")
        loop = asyncio.get_running_loop()
        for f in files:
            self._pending.append(loop.run_in_executor(self._pool, self._make, f["sha256"]))

    def _make(self, sha: str) -> None:
        result = run_job(Job(source=str(self.store.path(sha)), placeholder=True))
        if result.placeholder:
            self.index.put(placeholder_key(sha), {"placeholder": result.placeholder, "files": []})

    async def finish(self) -> None:
        """Wait for the placeholders started (failures included: publishing makes those again)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        self.close()

    def close(self) -> None:
        """Start nothing more and drop what has not started: an interrupted build does not wait
        for a queue of placeholders (the one being made ends on its own)."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
