"""Placeholder images: the documented pixel sizes, determinism, and what is drawn on them."""

from __future__ import annotations

import hashlib

import pytest

from starbuild import models
from starbuild.emulator import Emulator, EmulatorConfig, ManualClock
from starbuild.emulator.render import RenderCache, render_placeholder
from emulator_fixtures import KEY, anyio_backend, auth, decode, image_bytes, in_process_client  # noqa: F401

pytestmark = pytest.mark.anyio

# The table of STARMAGIC_API.md, copied from the document rather than computed.
DOCUMENTED = {
    "1:1": {"1K": (1024, 1024), "2K": (2048, 2048), "4K": (2880, 2880)},
    "2:1": {"1K": (1456, 720), "2K": (2896, 1456), "4K": (3840, 1920)},
    "3:1": {"1K": (1776, 592), "2K": (3552, 1184), "4K": (3840, 1280)},
    "3:2": {"1K": (1248, 832), "2K": (2512, 1680), "4K": (3520, 2352)},
    "4:3": {"1K": (1184, 880), "2K": (2368, 1776), "4K": (3312, 2480)},
    "5:4": {"1K": (1152, 912), "2K": (2288, 1824), "4K": (3216, 2576)},
    "16:9": {"1K": (1360, 768), "2K": (2736, 1536), "4K": (3840, 2160)},
    "21:9": {"1K": (1568, 672), "2K": (3136, 1344), "4K": (3840, 1632)},
}
PORTRAITS = {"1:2": "2:1", "1:3": "3:1", "2:3": "3:2", "3:4": "4:3", "4:5": "5:4", "9:16": "16:9", "9:21": "21:9"}


def cells():
    for ratio, tiers in DOCUMENTED.items():
        for tier, size in tiers.items():
            yield ratio, tier, size
    for portrait, landscape in PORTRAITS.items():
        for tier, (w, h) in DOCUMENTED[landscape].items():
            yield portrait, tier, (h, w)


CELLS = list(cells())
EXPLICIT = [  # (model, size, resolution, pixels)
    ("gpt-image-2", "auto", None, (1024, 1024)),
    ("gpt-image-2", None, None, (1024, 1024)),
    ("gpt-image-2", "1024x1536", None, (1024, 1536)),
    ("gpt-image-2", "2048×1152", None, (2048, 1152)),
    ("gpt-image-2", "1280x512", None, (1280, 512)),
    ("gpt-image-2", "3840x2160", None, (3840, 2160)),
    ("gpt-image-2", "16:9", "2k", (2736, 1536)),
    ("gpt-image-1.5", None, None, (1024, 1024)),
    ("gpt-image-1.5", "1:1", None, (1024, 1024)),
    ("gpt-image-1.5", "2:3", None, (1024, 1536)),
    ("gpt-image-1.5", "3:2", None, (1536, 1024)),
    ("gpt-image-1.5", "1024x1024", None, (1024, 1024)),
    ("gpt-image-1.5", "1024x1536", None, (1024, 1536)),
    ("gpt-image-1.5", "1536x1024", None, (1536, 1024)),
]


@pytest.fixture
def emulator():
    clock = ManualClock()
    return Emulator(EmulatorConfig(latency=1.0, render="plain"), clock=clock), clock


async def generate(emulator, clock, body: dict) -> list[bytes]:
    """Submit, let the task finish, download every result; the bytes of each image."""
    async with in_process_client(emulator, auth(KEY)) as client:
        response = await client.post("/v1/images/generations", json=body)
        assert response.status_code == 200, response.text
        clock.advance(emulator.config.latency)
        done = (await client.get(f"/v1/tasks/{response.json()['id']}")).json()
        assert done["status"] == "completed", done
        return [(await client.get(url)).content for url in done["results"]]


def test_the_table_covers_every_ratio_the_models_module_accepts():
    assert {ratio for ratio, _, _ in CELLS} == set(models.GPT2_RATIOS)
    assert len(CELLS) == 15 * 3


async def test_every_ratio_and_resolution_renders_at_the_documented_size(emulator):
    emu, clock = emulator
    for ratio, tier, size in CELLS:
        body = {"model": "gpt-image-2", "prompt": f"cell {ratio} {tier}", "size": ratio, "resolution": tier}
        [data] = await generate(emu, clock, body)
        image = decode(data)
        assert (ratio, tier, image.format, image.size) == (ratio, tier, "PNG", size)


@pytest.mark.parametrize(("model", "size", "resolution", "pixels"), EXPLICIT,
                         ids=[f"{m}-{s}-{r}" for m, s, r, _ in EXPLICIT])
async def test_explicit_sizes_auto_and_defaults_render_at_their_size(emulator, model, size, resolution, pixels):
    body = {"model": model, "prompt": "size check"}
    if size is not None:
        body["size"] = size
    if resolution is not None:
        body["resolution"] = resolution
    [data] = await generate(*emulator, body)
    assert decode(data).size == pixels


async def test_n_images_are_distinct_and_of_the_same_size(emulator):
    images = await generate(*emulator, {"model": "gpt-image-2", "prompt": "four of a kind", "n": 4, "size": "3:2"})
    assert len(images) == 4
    assert len({hashlib.sha256(data).hexdigest() for data in images}) == 4
    assert {decode(data).size for data in images} == {(1248, 832)}


async def test_full_render_at_4k_keeps_the_exact_size():
    clock = ManualClock()
    emu = Emulator(EmulatorConfig(render="full"), clock=clock)
    [data] = await generate(emu, clock, {"model": "gpt-image-2", "prompt": "big", "size": "16:9", "resolution": "4K"})
    assert decode(data).size == (3840, 2160)


@pytest.mark.parametrize("mode", ["full", "plain"])
def test_render_is_deterministic(mode):
    first = render_placeholder("a castle", "gpt-image-2", 640, 480, 0, mode)
    assert render_placeholder("a castle", "gpt-image-2", 640, 480, 0, mode) == first
    others = {
        render_placeholder("a castle", "gpt-image-2", 640, 480, 1, mode),
        render_placeholder("a palace", "gpt-image-2", 640, 480, 0, mode),
        render_placeholder("a castle", "gpt-image-1.5", 640, 480, 0, mode),
    }
    assert first not in others and len(others) == 3


def test_plain_render_is_one_solid_colour_and_full_render_draws_text():
    plain = decode(render_placeholder("words", "gpt-image-2", 800, 600, mode="plain")).convert("RGB")
    assert len(plain.getcolors(maxcolors=4) or []) == 1
    full = decode(render_placeholder("words", "gpt-image-2", 800, 600, mode="full")).convert("RGB")
    panel = full.crop((100, 250, 700, 350))
    assert len(panel.getcolors(maxcolors=100_000)) > 20  # antialiased white text on the panel
    assert (255, 255, 255) in {colour for _, colour in panel.getcolors(maxcolors=100_000)}


def test_render_survives_very_long_and_non_latin_prompts():
    for prompt in ["word " * 6400, "x" * 32_000, "Ünïcödé — 東京の夜景 🌃 " * 20, "", "   "]:
        image = decode(render_placeholder(prompt, "gpt-image-2", 1024, 1024))
        assert image.size == (1024, 1024)


@pytest.mark.parametrize("size", [(1, 1), (16, 16), (17, 900), (900, 17)])
def test_render_handles_tiny_and_thin_sizes(size):
    assert decode(render_placeholder("tiny", "gpt-image-2", *size)).size == size


def test_render_over_a_base_shows_the_base_scaled():
    base = image_bytes(size=(50, 100), colour=(0, 0, 250))
    image = decode(render_placeholder("edit", "gpt-image-2", 1024, 768, base=base)).convert("RGB")
    r, g, b = image.getpixel((30, 30))
    assert b > 200 and r < 40 and g < 40
    assert render_placeholder("edit", "gpt-image-2", 1024, 768, base=base) != \
        render_placeholder("edit", "gpt-image-2", 1024, 768)


def test_transparent_render_has_an_alpha_channel():
    image = decode(render_placeholder("cut-out", "gpt-image-2", 512, 512, transparent=True))
    assert image.mode == "RGBA"
    assert image.getpixel((40, 40))[3] == 0


async def test_transparent_background_requests_give_rgba_results():
    clock = ManualClock()
    emu = Emulator(EmulatorConfig(), clock=clock)
    [data] = await generate(emu, clock, {"model": "gpt-image-2", "prompt": "sticker", "background": "transparent"})
    assert decode(data).mode == "RGBA"


def test_render_rejects_unknown_modes_and_empty_sizes():
    with pytest.raises(ValueError):
        render_placeholder("x", "gpt-image-2", 10, 10, mode="fancy")
    with pytest.raises(ValueError):
        render_placeholder("x", "gpt-image-2", 0, 10)


async def test_results_render_once_and_come_from_the_cache_afterwards(emulator):
    emu, clock = emulator
    async with in_process_client(emu, auth(KEY)) as client:
        task = (await client.post("/v1/images/generations", json={"model": "gpt-image-2", "prompt": "c"})).json()
        clock.advance(1.0)
        url = (await client.get(f"/v1/tasks/{task['id']}")).json()["results"][0]
        calls = []
        original = emu.renders.get_or_render
        emu.renders.get_or_render = lambda key, render: original(key, lambda: calls.append(key) or render())
        first, second = (await client.get(url)).content, (await client.get(url)).content
    assert first == second and len(calls) == 1


def test_render_cache_is_bounded():
    cache = RenderCache(max_items=2, max_bytes=10_000)
    for key in "abc":
        cache.get_or_render(key, lambda: b"x" * 100)
    assert len(cache) == 2
    cache.get_or_render("big", lambda: b"x" * 20_000)
    assert len(cache) == 0


@pytest.mark.parametrize("mode", ["plain", "full"])
def test_fresh_samples_of_one_request_differ_and_no_sample_keeps_the_old_bytes(mode):
    args = ("a lighthouse", "gpt-image-2", 64, 48, 0, mode)
    assert render_placeholder(*args) == render_placeholder(*args, sample="")
    assert render_placeholder(*args, sample="task-a") != render_placeholder(*args, sample="task-b")


async def test_a_task_s_images_are_rendered_while_it_runs():
    """As the service has them ready when the task ends: the result link does not render on demand."""
    import anyio

    emulator = Emulator(EmulatorConfig(latency=0.4, render="plain"))
    async with in_process_client(emulator, auth(KEY)) as client:
        task = (await client.post("/v1/images/generations",
                                  json={"model": "gpt-image-2", "prompt": "a lighthouse", "n": 2})).json()
        assert len(emulator.renders) == 0
        await anyio.sleep(0.3)  # past halfway, before the end
        assert len(emulator.renders) == 2
        await anyio.sleep(0.2)
        body = (await client.get(f"/v1/tasks/{task['id']}")).json()
        assert body["status"] == "completed"
        data = (await client.get(body["results"][1])).content
    assert data == emulator._render(emulator.tasks[task["id"]], 1)  # noqa: SLF001
    assert len(emulator.renders) == 2  # nothing rendered again
