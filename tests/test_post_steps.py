"""Post steps one by one, their config errors, the packer, and the process pool against the inline path."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from starbuild.post.atlas import Frame, pack
from starbuild.post.schema import Step
from starbuild.post.steps import apply_steps
from starbuild.post.work import Job, run_jobs


def _steps(*raw) -> list[Step]:
    return [Step.model_validate(r) for r in raw]


def _subject(size=(400, 200), ground=(0, 200, 0)) -> Image.Image:
    img = Image.new("RGB", size, ground)
    ImageDraw.Draw(img).rectangle((100, 50, 299, 149), fill=(200, 30, 30))   # a 200 x 100 subject
    return img


@pytest.mark.parametrize("fit, size", [("cover", (100, 100)), ("contain", (100, 100)), ("fill", (100, 100)),
                                       ("inside", (100, 50)), ("outside", (200, 100))])
def test_resize_fits(fit, size):
    out, _ = apply_steps(Image.new("RGB", (400, 200)), _steps({"resize": {"width": 100, "height": 100, "fit": fit}}))
    assert out.size == size


def test_resize_one_side_keeps_the_aspect_and_upscale_false_keeps_small_images():
    assert apply_steps(Image.new("RGB", (400, 200)), _steps({"resize": {"width": 100}}))[0].size == (100, 50)
    small = _steps({"resize": {"width": 800, "height": 800, "upscale": False}})
    assert apply_steps(Image.new("RGB", (400, 200)), small)[0].size == (400, 200)


@pytest.mark.parametrize("pad, size", [({"to": "pow2"}, (512, 256)), ({"multiple": 64}, (448, 256)),
                                       ({"to": "500x300"}, (500, 300)), ({"to": "pow2", "square": True}, (512, 512))])
def test_pad(pad, size):
    out, _ = apply_steps(Image.new("RGB", (400, 200), (9, 9, 9)), _steps({"pad": pad}))
    assert out.size == size and out.getpixel((0, 0))[3] == 0 and out.getpixel((size[0] // 2, size[1] // 2))[3] == 255


def test_chroma_key_trim_and_defringe_cut_out_the_subject():
    out, state = apply_steps(_subject(), _steps({"chroma_key": {"tolerance": 30}}, "defringe", {"trim": {"padding": 3}}))
    assert state["key"] == (0, 200, 0)
    assert out.size == (204, 104)                       # 200 x 100 minus one eroded pixel a side, plus padding 3
    assert out.getpixel((0, 0))[3] == 0 and out.getpixel((102, 52)) == (200, 30, 30, 255)


def test_trim_of_an_opaque_image_uses_the_border_colour():
    out, _ = apply_steps(_subject(), _steps({"trim": {"padding": 2}}))
    assert out.size == (204, 104) and out.getpixel((0, 0)) == (0, 200, 0, 255)


def test_flatten_pixelate_quantize_crop():
    keyed = _steps("chroma_key", {"flatten": {"color": "#ffffff"}})
    assert apply_steps(_subject(), keyed)[0].getpixel((0, 0)) == (255, 255, 255, 255)
    assert apply_steps(_subject(), _steps({"crop": {"x": 350, "y": 0, "width": 100, "height": 10}}))[0].size == (50, 10)
    pixel = apply_steps(Image.effect_noise((64, 64), 60).convert("RGB"), _steps({"pixelate": {"size": 8}}))[0]
    assert len({pixel.getpixel((x, y)) for x in range(8) for y in range(8)}) == 1
    pal = _steps("chroma_key", {"quantize": {"palette": ["#ff0000", "#000000"], "grid": 4}})
    q = apply_steps(_subject(), pal)[0]
    assert {c for _, c in q.convert("RGB").getcolors(10)} <= {(255, 0, 0), (0, 0, 0)}
    assert {v for _, v in q.getchannel("A").getcolors()} <= {0, 255}


@pytest.mark.parametrize("post, fragment", [
    ("[{resize: {width: 10, fitt: cover}}]", "post.0.resize.fitt: unknown field 'fitt'; did you mean 'fit'?"),
    ("[trim, {blurr: {}}]", "post.1.blurr: unknown step 'blurr'"),
    ("[chroma_key, {format: {type: jpeg}}]", "format jpeg cannot hold the transparency made by chroma_key (step 1)"),
    ("[{format: {type: png, quality: 80}}]", "png is lossless"),
    ("[{pad: {to: pow3}}]", "write 'pow2' or a size"),
    ("[{resize: {fit: cover}}]", "resize needs width, height or both"),
    ("[{trim: {padding: 1}, resize: {width: 2}}]", "a step is one name with its parameters"),
])
def test_post_config_errors_are_located(project, post, fragment):
    project.config(f"version: 1\nimages:\n  a:\n    prompt: x\n    post: {post}\n")
    res = project.run("validate")
    assert res.exit_code == 2 and fragment in res.stderr and "starbuild.yaml:5:" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_jpeg_variants_of_a_transparent_image_are_refused(project):
    project.config("version: 1\nimages:\n  a:\n    prompt: x\n    background: transparent\n"
                   "    variants: {widths: [64], formats: [jpeg]}\n")
    res = project.run("validate")
    assert res.exit_code == 2 and "variants format jpeg cannot hold the transparency" in res.stderr
    # the transparency may come from the defaults and the jpeg from the image: refused before paying
    project.config("version: 1\ndefaults: {background: transparent}\nimages:\n  a:\n    prompt: x\n"
                   "    post: [{format: {type: jpeg}}]\n")
    for command in ("validate", "build"):
        res = project.run(command, "--offline") if command == "build" else project.run(command)
        assert res.exit_code == 2 and "starbuild.yaml:4:" in res.stderr and "background: transparent" in res.stderr
    assert not (project.root / "starbuild.lock").exists()


def test_pow2_pages():
    from starbuild.post.atlas import render_pages

    frames = [Frame("a", Image.new("RGBA", (100, 30), (1, 2, 3, 255)), 100, 30)]
    sizes = pack(frames, 512, 2, 0)
    assert sizes == [(100, 30)] and render_pages(frames, sizes, 0, True)[0].size == (128, 32)


def test_packer_is_deterministic_and_never_overlaps():
    def frames():
        return [Frame(f"f{i}", Image.new("RGBA", (10 + i * 7 % 50, 5 + i * 13 % 40)), 60, 60) for i in range(40)]

    a, b = frames(), frames()
    sizes = pack(a, 128, 2, 1)
    assert sizes == pack(b, 128, 2, 1) and len(sizes) > 1
    assert [(f.page, f.x, f.y) for f in a] == [(f.page, f.x, f.y) for f in b]
    for i, f in enumerate(a):
        assert f.x >= 1 and f.y >= 1 and f.x + f.w + 1 <= 128 and f.y + f.h + 1 <= 128
        for g in a[i + 1:]:
            assert f.page != g.page or f.x + f.w + 4 <= g.x or g.x + g.w + 4 <= f.x or \
                f.y + f.h + 4 <= g.y or g.y + g.h + 4 <= f.y


def test_pool_gives_the_same_files_as_inline(tmp_path):
    src = []
    for i in range(3):
        path = tmp_path / f"s{i}.png"
        _subject(ground=(0, 200, i)).save(path)
        src.append(path)
    steps = tuple(s.canonical() for s in _steps("chroma_key", "trim", {"format": {"type": "webp"}}))

    def jobs(tag):
        out = tmp_path / tag
        out.mkdir()
        return [Job(source=str(p), steps=steps, meta=(("spec_hash", "x"),), variants=((64, "avif", None),),
                    placeholder=True, tmp_dir=str(out)) for p in src]

    inline = run_jobs(jobs("inline"), workers=0)
    pooled = run_jobs(jobs("pool"), workers=2)
    assert [r.delivered["sha256"] for r in inline] == [r.delivered["sha256"] for r in pooled]
    assert [r.variants[0]["sha256"] for r in inline] == [r.variants[0]["sha256"] for r in pooled]
    assert all(r.placeholder and r.placeholder == q.placeholder for r, q in zip(inline, pooled))
    assert Image.open(pooled[0].delivered["tmp"]).format == "WEBP"


def test_chroma_key_auto_finds_a_noisy_flat_ground():
    import random

    rng = random.Random(7)
    img = _subject()
    px = img.load()
    for x in range(img.width):
        for y in range(img.height):
            if px[x, y] == (0, 200, 0):
                px[x, y] = (rng.randint(0, 5), 200 + rng.randint(-5, 5), rng.randint(0, 5))
    out, state = apply_steps(img, _steps({"chroma_key": {"tolerance": 20}}, "trim"))
    assert max(abs(a - b) for a, b in zip(state["key"], (2, 200, 2))) <= 2
    assert out.size == (200, 100)


def test_two_assets_writing_one_path_is_a_config_error(project):
    project.config("version: 1\nimages:\n  a:\n    prompt: x\n    variants: {widths: [64], formats: [png]}\n"
                   "  a-64:\n    prompt: y\n")
    res = project.run("validate")
    assert res.exit_code == 2 and "starbuild.yaml:6:3: images.a-64: 'a-64.png' would be written by both 'a' and" \
        in res.stderr, res.stderr
