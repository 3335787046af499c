"""The atlases of a delivery: frames from delivered files, packed pages and engine metadata, cached by key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starbuild.config.project import Project
from starbuild.post.recipe import atlas_key, atlas_members, stem

if TYPE_CHECKING:
    from starbuild.post.deliver import Deliverer, Delivery

ATLAS_DIR = "atlases"


def _frames(delivery: "Delivery", members: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(frame name, delivered record) of every member: its outputs' delivered files, else its files."""
    out = []
    for name in members:
        entry = delivery.entries[name]
        records = entry.get("outputs") if "outputs" in entry else entry.get("files")
        for rec in records or []:
            if rec.get("role", "delivered") == "delivered":
                out.append((stem(rec["path"]), rec))
    return out


def pack_atlases(project: Project, delivery: "Delivery", d: "Deliverer", previous: dict[str, dict]) -> None:
    """Fill ``delivery.atlases``; an atlas that cannot be made keeps its previous files and is reported."""
    names = sorted(delivery.entries)
    for atlas_name, atlas in sorted(project.config.atlases.items()):
        members = [m for m in atlas_members(atlas, names) if m not in delivery.failures]
        frames = _frames(delivery, members)
        key = atlas_key(atlas_name, atlas, [(n, r["sha256"]) for n, r in frames])
        record = d.index.get(key)
        if record is None:
            try:
                record = _make(atlas_name, atlas, frames, d)
            except ValueError as exc:
                delivery.failures[f"{ATLAS_DIR}/{atlas_name}"] = f"atlas {atlas_name!r}: {exc}"
                if atlas_name in previous:
                    delivery.atlases[atlas_name] = previous[atlas_name]
                continue
            d.index.put(key, record)
            delivery.processed += len(record["files"])
        delivery.atlases[atlas_name] = {"key": key, "config": atlas.canonical(),
                                        "frames": sorted(n for n, _ in frames), **record}


def _make(atlas_name: str, atlas, frames: list[tuple[str, dict]], d: "Deliverer") -> dict[str, Any]:
    from PIL import Image

    from starbuild.post.atlas import make_frame, pack, render_pages
    from starbuild.post.encode import encode
    from starbuild.post.exports import EXPORTERS, page_name

    if not frames:
        raise ValueError("no delivered image matches its include patterns")
    made = []
    for name, rec in frames:
        path = d.object_path(rec)
        if path is None:
            raise ValueError(f"the image of frame {name!r} is missing from the object store")
        with Image.open(path) as img:
            made.append(make_frame(name, img, atlas.trim))
    sizes = pack(made, atlas.max_size, atlas.padding, atlas.extrude)
    pages = render_pages(made, sizes, atlas.extrude, atlas.pow2)
    files = []
    for i, page in enumerate(pages):
        data = encode(page, "png")
        sha, _ = d.index.add_bytes(data)
        files.append({"path": f"{ATLAS_DIR}/{page_name(atlas_name, i)}", "sha256": sha, "bytes": len(data),
                      "width": page.width, "height": page.height, "format": "png"})
    for kind in atlas.exports:
        for rel, data in EXPORTERS[kind](atlas_name, made, [p.size for p in pages]).items():
            sha, _ = d.index.add_bytes(data)
            files.append({"path": f"{ATLAS_DIR}/{rel}", "sha256": sha, "bytes": len(data),
                          "format": rel.rsplit(".", 1)[-1]})
    return {"files": files}
