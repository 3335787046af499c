"""Engine metadata for packed atlases: TexturePacker JSON (hash), Phaser 3 multi-atlas, Godot 4 SpriteFrames."""

from __future__ import annotations

import json
import re

from starbuild.post.atlas import Frame

APP = "https://starbuild.dev"


def page_name(atlas: str, page: int, ext: str = "png") -> str:
    """``icons.png``, then ``icons-1.png``, ``icons-2.png`` ... for more pages."""
    return f"{atlas}.{ext}" if page == 0 else f"{atlas}-{page}.{ext}"


def _frame_json(f: Frame) -> dict:
    return {"frame": {"x": f.x, "y": f.y, "w": f.w, "h": f.h}, "rotated": False, "trimmed": f.trimmed,
            "spriteSourceSize": {"x": f.offset_x, "y": f.offset_y, "w": f.w, "h": f.h},
            "sourceSize": {"w": f.source_w, "h": f.source_h}}


def _meta(atlas: str, page: int, size: tuple[int, int]) -> dict:
    return {"app": APP, "version": "1", "image": page_name(atlas, page), "format": "RGBA8888",
            "size": {"w": size[0], "h": size[1]}, "scale": "1"}


def _dump(data) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()


def texturepacker(atlas: str, frames: list[Frame], sizes: list[tuple[int, int]]) -> dict[str, bytes]:
    """One JSON (hash) per page, named like the page: icons.json, icons-1.json ..."""
    out = {}
    for page, size in enumerate(sizes):
        hashed = {f.name: _frame_json(f) for f in sorted(frames, key=lambda f: f.name) if f.page == page}
        out[page_name(atlas, page, "json")] = _dump({"frames": hashed, "meta": _meta(atlas, page, size)})
    return out


def phaser3(atlas: str, frames: list[Frame], sizes: list[tuple[int, int]]) -> dict[str, bytes]:
    """Phaser 3's multi-atlas format (``this.load.multiatlas``), all pages in one file."""
    textures = []
    for page, size in enumerate(sizes):
        entries = [{"filename": f.name, **_frame_json(f)} for f in sorted(frames, key=lambda f: f.name)
                   if f.page == page]
        textures.append({"image": page_name(atlas, page), "format": "RGBA8888",
                         "size": {"w": size[0], "h": size[1]}, "scale": 1, "frames": entries})
    return {f"{atlas}.phaser3.json": _dump({"textures": textures, "meta": {"app": APP, "version": "1"}})}


_NUMBERED = re.compile(r"^(.*)-(\d+)$")


def _animations(frames: list[Frame]) -> dict[str, list[Frame]]:
    """One animation per asset: ``walk-1`` ... ``walk-4`` (an asset with n images) play as ``walk``."""
    names = {f.name for f in frames}
    groups: dict[str, list[Frame]] = {}
    for f in sorted(frames, key=lambda f: (f.name,)):
        m = _NUMBERED.match(f.name)
        base = m.group(1) if m and m.group(1) not in names and f"{m.group(1)}-1" in names else f.name
        groups.setdefault(base, []).append(f)
    for group in groups.values():
        group.sort(key=lambda f: int(_NUMBERED.match(f.name).group(2)) if len(group) > 1 else 0)
    return groups


def godot(atlas: str, frames: list[Frame], sizes: list[tuple[int, int]]) -> dict[str, bytes]:
    """A Godot 4 SpriteFrames resource whose frames are AtlasTextures over the pages (paths relative)."""
    ids = {f.name: i + 1 for i, f in enumerate(sorted(frames, key=lambda f: f.name))}
    lines = [f'[gd_resource type="SpriteFrames" load_steps={len(sizes) + len(frames) + 1} format=3]', ""]
    for page in range(len(sizes)):
        lines.append(f'[ext_resource type="Texture2D" path="{page_name(atlas, page)}" id="page_{page}"]')
    lines.append("")
    for f in sorted(frames, key=lambda f: f.name):
        lines += [f'[sub_resource type="AtlasTexture" id="AtlasTexture_{ids[f.name]}"]',
                  f'atlas = ExtResource("page_{f.page}")', f"region = Rect2({f.x}, {f.y}, {f.w}, {f.h})"]
        if f.trimmed:
            right, bottom = f.source_w - f.offset_x - f.w, f.source_h - f.offset_y - f.h
            lines.append(f"margin = Rect2({f.offset_x}, {f.offset_y}, {f.offset_x + right}, {f.offset_y + bottom})")
        lines.append("")
    anims = []
    for name, group in _animations(frames).items():
        items = ",\n".join(f'{{\n"duration": 1.0,\n"texture": SubResource("AtlasTexture_{ids[f.name]}")\n}}'
                           for f in group)
        anims.append(f'{{\n"frames": [{items}],\n"loop": true,\n"name": &{json.dumps(name)},\n"speed": 5.0\n}}')
    lines += ["[resource]", f"animations = [{', '.join(anims)}]", ""]
    return {f"{atlas}.tres": "\n".join(lines).encode()}


EXPORTERS = {"texturepacker": texturepacker, "phaser3": phaser3, "godot": godot}
