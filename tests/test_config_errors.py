"""Bad configs: exit 2, one located line per problem naming the field, nothing written."""

from __future__ import annotations

import pytest

GOOD_HEAD = "version: 1\nimages:\n"

# (case id, config text, expected line, words the error must contain)
CASES = [
    ("unknown-top-key", "version: 1\nimagez: {}\nimages:\n  a: {prompt: x}\n", 2, ["imagez", "unknown field"]),
    ("missing-version", "images:\n  a: {prompt: x}\n", 1, ["version", "required"]),
    ("bad-version", "version: 2\nimages:\n  a: {prompt: x}\n", 1, ["version"]),
    ("missing-images", "version: 1\n", 1, ["images", "required"]),
    ("not-a-mapping", "- a\n- b\n", 1, ["mapping"]),
    ("yaml-syntax", "version: 1\nimages:\n  a: [prompt\n", 4, ["expected"]),
    ("duplicate-key", GOOD_HEAD + "  a: {prompt: x}\n  a: {prompt: y}\n", 4, ["duplicate key"]),
    ("python-tag", GOOD_HEAD + "  a: !!python/object/apply:os.system [ls]\n", 3, ["tag"]),
    ("unknown-image-field", GOOD_HEAD + "  a:\n    prompt: x\n    promt: y\n", 5, ["promt", "did you mean 'prompt'"]),
    ("no-prompt", GOOD_HEAD + "  a:\n    size: '1:1'\n", 3, ["prompt"]),
    ("both-prompts", GOOD_HEAD + "  a:\n    prompt: x\n    prompt_file: p.j2\n", 4, ["not both"]),
    ("bad-model", GOOD_HEAD + "  a:\n    prompt: x\n    model: dall-e\n", 5, ["model", "gpt-image-2"]),
    ("bad-quality", GOOD_HEAD + "  a:\n    prompt: x\n    quality: ultra\n", 5, ["quality", "ultra"]),
    ("bad-ratio", GOOD_HEAD + "  a:\n    prompt: x\n    size: '5:3'\n", 5, ["size", "5:3", "gpt-image-2"]),
    ("size-number", GOOD_HEAD + "  a:\n    prompt: x\n    size: 1024\n", 5, ["size", "string"]),
    ("wxh-not-16", GOOD_HEAD + "  a:\n    prompt: x\n    size: 1000x1000\n", 5, ["size", "multiples of 16"]),
    ("wxh-too-big", GOOD_HEAD + "  a:\n    prompt: x\n    size: 3840x3840\n", 5, ["size", "total pixels"]),
    ("wxh-too-small", GOOD_HEAD + "  a:\n    prompt: x\n    size: 512x512\n", 5, ["size", "total pixels"]),
    ("wxh-ratio", GOOD_HEAD + "  a:\n    prompt: x\n    size: 3840x1024\n", 5, ["size", "3:1"]),
    ("wxh-edge", GOOD_HEAD + "  a:\n    prompt: x\n    size: 4096x2048\n", 5, ["size", "3840"]),
    ("bad-resolution", GOOD_HEAD + "  a:\n    prompt: x\n    size: '1:1'\n    resolution: 3K\n", 6, ["resolution", "3K"]),
    ("resolution-wxh", GOOD_HEAD + "  a:\n    prompt: x\n    size: 1024x1024\n    resolution: 2K\n", 6, ["resolution", "ratio"]),
    ("gpt15-size", GOOD_HEAD + "  a:\n    prompt: x\n    model: gpt-image-1.5\n    size: '16:9'\n", 6, ["size", "gpt-image-1.5"]),
    ("gpt15-resolution", GOOD_HEAD + "  a:\n    prompt: x\n    model: gpt-image-1.5\n    size: '1:1'\n    resolution: 2K\n", 7, ["resolution", "gpt-image-1.5"]),
    ("gpt15-n", GOOD_HEAD + "  a:\n    prompt: x\n    model: gpt-image-1.5\n    n: 2\n", 6, ["n", "one image"]),
    ("gpt15-background", GOOD_HEAD + "  a:\n    prompt: x\n    model: gpt-image-1.5\n    background: transparent\n", 6, ["background", "gpt-image-1.5"]),
    ("gpt2-n-too-many", GOOD_HEAD + "  a:\n    prompt: x\n    n: 11\n", 5, ["n", "10"]),
    ("gpt2-n-zero", GOOD_HEAD + "  a:\n    prompt: x\n    n: 0\n", 5, ["n"]),
    ("bad-background", GOOD_HEAD + "  a:\n    prompt: x\n    background: clear\n", 5, ["background"]),
    ("take-negative", GOOD_HEAD + "  a:\n    prompt: x\n    take: -1\n", 5, ["take"]),
    ("post-unknown-step", GOOD_HEAD + "  a:\n    prompt: x\n    post: [blur]\n", 5, ["post.0.blur", "unknown step"]),
    ("undefined-var", GOOD_HEAD + "  a:\n    prompt: 'a {{ colour }} cat'\n", 4, ["colour", "undefined"]),
    ("template-syntax", GOOD_HEAD + "  a:\n    prompt: 'a {% if %} cat'\n", 4, ["syntax"]),
    ("sandbox-escape", GOOD_HEAD + "  a:\n    prompt: '{{ ().__class__.__bases__ }}'\n", 4, ["unsafe"]),
    ("bad-name-chars", GOOD_HEAD + "  'hero image':\n    prompt: x\n", 3, ["not a valid asset name"]),
    ("name-dotdot", GOOD_HEAD + "  '../escape':\n    prompt: x\n", 3, ["'..'"]),
    ("name-absolute", GOOD_HEAD + "  '/etc/x':\n    prompt: x\n", 3, ["not a valid asset name"]),
    ("name-collision", GOOD_HEAD + "  'a-{{ k }}':\n    matrix: {k: [1, 1]}\n    prompt: x\n", 3, ["produced twice", "k: 1"]),
    ("name-collision-two-images", GOOD_HEAD + "  a:\n    prompt: x\n  '{{ n }}':\n    matrix: {n: [a]}\n    prompt: y\n", 5, ["'a'", "produced twice"]),
    ("exclude-unknown-axis", GOOD_HEAD + "  'a-{{ k }}':\n    matrix:\n      k: [1, 2]\n      exclude:\n        - {j: 1}\n    prompt: x\n", 7, ["'j'", "not an axis"]),
    ("empty-axis", GOOD_HEAD + "  'a-{{ k }}':\n    matrix:\n      k: []\n    prompt: x\n", 5, ["no values"]),
    ("axis-file-missing", GOOD_HEAD + "  'a-{{ p.id }}':\n    matrix:\n      p: {file: nope.csv}\n    prompt: x\n", 5, ["nope.csv", "not found"]),
    ("axis-file-outside", GOOD_HEAD + "  'a-{{ p.id }}':\n    matrix:\n      p: {file: ../../x.csv}\n    prompt: x\n", 5, ["outside"]),
    ("prompt-file-missing", GOOD_HEAD + "  a:\n    prompt_file: prompts/none.j2\n", 4, ["none.j2", "not found"]),
    ("bad-concurrency", "version: 1\nprovider:\n  concurrency: 0\nimages:\n  a: {prompt: x}\n", 3, ["concurrency"]),
    ("bad-rate-limit", "version: 1\nprovider:\n  rate_limit: fast\nimages:\n  a: {prompt: x}\n", 3, ["rate_limit", "N/min"]),
    ("unknown-provider-key", "version: 1\nprovider:\n  concurency: 2\nimages:\n  a: {prompt: x}\n", 3, ["did you mean 'concurrency'"]),
    ("bad-keep", "version: 1\noutput:\n  keep: 0\nimages:\n  a: {prompt: x}\n", 3, ["keep"]),
    ("defaults-bad-size", "version: 1\ndefaults:\n  size: '7:5'\nimages:\n  a: {prompt: x}\n", 3, ["size", "7:5"]),
    ("mask-gpt15", GOOD_HEAD + "  a:\n    prompt: x\n    model: gpt-image-1.5\n    inputs: [https://example.com/a.png]\n    mask: https://example.com/m.png\n", 7, ["mask", "gpt-image-2"]),
    ("mask-without-inputs", GOOD_HEAD + "  a:\n    prompt: x\n    mask: https://example.com/m.png\n", 5, ["mask", "inputs"]),
    ("too-many-inputs", GOOD_HEAD + "  a:\n    prompt: x\n    inputs: [" + ", ".join(["https://e.com/a.png"] * 17) + "]\n", 5, ["inputs", "16"]),
    ("input-missing-file", GOOD_HEAD + "  a:\n    prompt: x\n    inputs: [refs/none.png]\n", 5, ["none.png", "not found"]),
    ("unknown-asset-ref", GOOD_HEAD + "  a:\n    prompt: x\n    inputs: ['@nope']\n", 5, ["@nope"]),
    ("asset-cycle", GOOD_HEAD + "  a:\n    prompt: x\n    inputs: ['@b']\n  b:\n    prompt: y\n    inputs: ['@a']\n", None, ["cycle", "a → b → a"]),
    ("prompt-too-long-15", GOOD_HEAD + "  a:\n    model: gpt-image-1.5\n    prompt: '" + "x" * 8001 + "'\n", 5, ["prompt", "2000 tokens"]),
]


@pytest.mark.parametrize("text,line,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_config_error_is_located(project, text, line, words):
    project.config(text)
    for command in (["validate"], ["plan"], ["build", "--offline"]):
        res = project.run(*command)
        assert res.exit_code == 2, (command, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr
        err = res.stderr
        assert err.startswith("error: starbuild.yaml:") or err.startswith("error: "), err
        for word in words:
            assert word in err, (word, err)
        if line is not None:
            assert f"starbuild.yaml:{line}:" in err, err
    assert not (project.root / "starbuild.lock").exists()
    assert not (project.root / "assets").exists()


def test_config_errors_all_reported_together(project):
    project.config("""\
        version: 1
        images:
          a:
            prompt: x
            quality: ultra
          b:
            prompt: y
            size: '5:3'
          c:
            promt: z
        """)
    res = project.run("validate")
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 3, res.stderr
    assert [":5:" in lines[0], ":8:" in lines[1], ":10:" in lines[2]] == [True, True, True]


def test_config_missing_file_is_usage_error(project):
    project.root.mkdir(parents=True)
    res = project.run("validate")
    assert res.exit_code == 2
    assert "starbuild.yaml" in res.stderr and "not found" in res.stderr


def test_config_matrix_error_reported_once_for_many_cells(project):
    project.config("""\
        version: 1
        images:
          "a-{{ k }}":
            matrix: {k: [1, 2, 3, 4, 5, 6, 7, 8, 9]}
            prompt: "{{ missing }}"
        """)
    res = project.run("validate")
    assert res.exit_code == 2
    assert res.stderr.count("missing") == 1, res.stderr


def test_config_template_error_names_prompt_file_line(project):
    project.write("prompts/p.j2", "line one\nline two {{ nope }}\n")
    project.config("version: 1\nimages:\n  a:\n    prompt_file: prompts/p.j2\n")
    res = project.run("validate")
    assert res.exit_code == 2
    assert "prompts/p.j2, line 2" in res.stderr and "nope" in res.stderr


def test_config_bad_lockfile_is_located(project):
    project.config("version: 1\nimages:\n  a: {prompt: x}\n")
    project.write("starbuild.lock", "{not json")
    res = project.run("plan")
    assert res.exit_code == 2
    assert "starbuild.lock:1:2" in res.stderr
