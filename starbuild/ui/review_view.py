"""What the review gallery shows, as plain data for its templates: cards grouped into matrix grids,
filter flags, candidates, before/after, pending changes. Reads the project; writes nothing."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starbuild.review.entries import candidates, field_changes, has_pick
from starbuild.store.lockfile import LOCK_NAME, read_lock

FILTERS = (("changed", "changed since commit"), ("failed", "failed"), ("placeholder", "placeholder"),
           ("nopick", "no pick"))


@dataclass
class Group:
    """Assets of one image key: a rows × columns grid for a matrix of two or more axes, else a row of cards."""

    key: str
    cards: list[dict] = field(default_factory=list)
    row_axis: str = ""
    col_axis: str = ""
    rows: list[str] = field(default_factory=list)
    cols: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str], dict] = field(default_factory=dict)


def label(value: Any) -> str:
    """A matrix value as a grid heading: scalars as written, a file row by its first field."""
    if isinstance(value, dict):
        return label(next(iter(value.values()))) if value else "{}"
    if isinstance(value, (list, tuple)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def facts(entry: dict) -> str:
    req = entry.get("request") or {}
    bits = [req.get("model"), req.get("size"), req.get("resolution"), req.get("quality"), entry.get("tier")]
    text = " · ".join(str(b) for b in bits if b)
    if isinstance(entry.get("credits"), (int, float)):
        text += f" · {entry['credits']:g} credits"
    return text


def committed_lock(root: Path) -> dict[str, dict] | None:
    """The lockfile's assets at the last commit, or None outside git (or before the first commit)."""
    try:
        out = subprocess.run(["git", "show", f"HEAD:./{LOCK_NAME}"], cwd=root, capture_output=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    try:
        data = json.loads(out.stdout)
    except ValueError:
        return None
    return data.get("assets") if isinstance(data, dict) and isinstance(data.get("assets"), dict) else None


def _changed(entry: dict | None, before: dict[str, dict] | None, name: str) -> bool:
    if before is None or entry is None:
        return False
    old = before.get(name)
    return old is None or [f.get("sha256") for f in old.get("files") or []] != \
        [f.get("sha256") for f in entry.get("files") or []] or old.get("spec_hash") != entry.get("spec_hash")


class ReviewView:
    """Builds the index and asset pages' data from the lockfile, the plan and the gallery's state."""

    def __init__(self, project, state, assets_dir):
        self.project, self.state, self.assets = project, state, assets_dir
        self.lock = read_lock(project.root / LOCK_NAME)
        self.version = assets_dir.current()
        self.plan = self._plan()

    def _plan(self):
        from starbuild.engine.build import plan_project
        from starbuild.errors import StarbuildError

        try:
            offline = bool(getattr(self.state.options, "offline", False))
            return plan_project(self.project, tier=self.state.tier, placeholder=offline)
        except StarbuildError:
            return None

    def card(self, name: str, planned=None, before=None) -> dict:
        entry = self.lock.assets.get(name) or {}
        files = entry.get("outputs") or entry.get("files") or []  # the delivered file when processed
        cands = candidates(entry)
        spec = planned.spec if planned is not None else None
        takes = bool(spec.takes) if spec is not None else bool(entry.get("takes"))
        failure = self.state.failed.get(name)
        return {
            "name": name, "entry": entry, "prompt": (entry.get("request") or {}).get("prompt", "")
            or (spec.prompt if spec else ""), "facts": facts(entry),
            "thumb": f"/thumb/{self.version}/{quote(files[0]['path'])}" if files and self.version else None,
            "status": planned.status.value if planned is not None else "", "reason": planned.reason if planned else "",
            "failure": failure, "live": self.state.live_text(name), "candidates": len(cands),
            "flags": {"failed": failure is not None, "placeholder": bool(entry.get("placeholder")),
                      "nopick": takes and bool(entry) and not has_pick(entry),
                      "changed": _changed(entry or None, before, name)},
        }

    def groups(self) -> list[Group]:
        before = committed_lock(self.project.root)
        planned = {a.name: a for a in self.plan.assets} if self.plan else {}
        names = list(planned) + sorted((set(self.lock.assets) | self.state.building | set(self.state.failed))
                                       - set(planned))
        groups: dict[str, Group] = {}
        for name in names:
            a = planned.get(name)
            if a is None and name not in self.lock.assets and name not in self.state.failed:
                continue
            key = a.spec.template if a is not None and a.spec is not None and a.spec.cell else ""
            group = groups.setdefault(key, Group(key))
            self._place(group, self.card(name, a, before), a.spec.cell if key else None)
        return sorted(groups.values(), key=lambda g: (g.key != "", g.key))

    @staticmethod
    def _place(group: Group, card: dict, cell: dict | None) -> None:
        group.cards.append(card)
        if not cell or len(cell) < 2:
            return
        axes = list(cell)
        row, col = label(cell[axes[0]]), ", ".join(label(cell[a]) for a in axes[1:])
        group.row_axis, group.col_axis = axes[0], ", ".join(axes[1:])
        if row not in group.rows:
            group.rows.append(row)
        if col not in group.cols:
            group.cols.append(col)
        group.cells[(row, col)] = card

    def asset(self, name: str) -> dict | None:
        planned = self.plan.by_name.get(name) if self.plan else None
        entry = self.lock.assets.get(name)
        if entry is None and planned is None:
            return None
        page = self.card(name, planned)
        entry = entry or {}
        pick = (entry.get("pick") or {}).get("take")
        published = (entry.get("files") or [{}])[0].get("sha256")
        page["candidates"] = [{"take": c["take"], "sha256": c["sha256"], "credits": f"{c.get('credits') or 0:g}",
                               "picked": c["take"] == pick, "published": c["sha256"] == published}
                              for c in candidates(entry) if c.get("sha256")]
        page["built"] = bool(entry.get("files"))
        page["changes"] = []
        if planned is not None and planned.spec is not None and entry:
            page["changes"] = [(k, _short(o), _short(n)) for k, (o, n) in field_changes(entry, planned.spec).items()]
        page["versions"] = self._versions(name)
        page["before"], page["after"] = self._before_after(page["versions"])
        return page

    def _versions(self, name: str) -> list[dict]:
        """Versions in which the asset's image changed, newest first (an unchanged image is shown once)."""
        distinct: list[tuple[int, dict]] = []
        for v in sorted(self.assets.versions()):
            entry = (self.assets.manifest(v).get("assets") or {}).get(name)
            if entry and (not distinct or (distinct[-1][1].get("files"), distinct[-1][1].get("outputs")) !=
                          (entry.get("files"), entry.get("outputs"))):
                distinct.append((v, entry))
        return [{"version": v, "current": v == distinct[-1][0] and (self.version or 0) >= v,
                 "files": [f["path"] for f in entry.get("outputs") or entry.get("files") or []
                           if f.get("role") != "variant"],
                 "deliverables": deliverables(v, entry), "created": entry.get("created", ""),
                 "prompt": (entry.get("request") or {}).get("prompt", ""), "facts": facts(entry)}
                for v, entry in reversed(distinct)]

    @staticmethod
    def _before_after(versions: list[dict]) -> tuple[dict | None, dict | None]:
        if len(versions) < 2 or not versions[0]["files"] or not versions[1]["files"]:
            return None, None

        def view(v: dict) -> dict:
            return {**v, "src": f"/file/{v['version']}/{quote(v['files'][0])}"}

        return view(versions[1]), view(versions[0])


def deliverables(version: int, entry: dict) -> list[tuple[str, str]]:
    """Below a processed asset's delivered file: its generated source and its variants, as (href, text)."""
    if "outputs" not in entry:
        return []
    links = [(f"/source/{quote(str(f.get('sha256')))}", f"source {f.get('width')}x{f.get('height')}")
             for f in entry.get("files") or [] if isinstance(f, dict)]
    links += [(f"/file/{version}/{quote(f['path'])}", f"{f['path']} ({f.get('width')}w)")
              for f in entry.get("outputs") or [] if isinstance(f, dict) and f.get("role") == "variant"]
    return links


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 300 else text[:297] + "..."
