"""The JSON Schema and `starbuild validate` agree on a corpus of valid and broken configs.

Each case says what both must answer: "valid", "invalid", or the key of the rule (in
starbuild.config.schema.LOOSER_THAN_VALIDATE) that JSON Schema cannot express, for which
validate refuses and the schema accepts.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from PIL import Image

from conftest import REPO
from starbuild.config.schema import LOOSER_THAN_VALIDATE, schema_dict
from starbuild.config.yamlfile import load_yaml

V = "version: 1\n"
IMG = V + "images:\n  a:\n    prompt: x\n"


def img(extra: str) -> str:
    return IMG + "".join(f"    {line}\n" for line in extra.splitlines())


CORPUS: dict[str, tuple[str, str]] = {
    # --- valid -------------------------------------------------------------------------------
    "minimal": (IMG, "valid"),
    "defaults prompt": (V + "defaults: {prompt: 'a {{ x }}'}\nvars: {x: cat}\nimages:\n  a: {}\n  b: {size: '1:1'}\n",
                        "valid"),
    "defaults prompt_file, image prompt": (V + "defaults: {prompt_file: prompts/p.j2}\nimages:\n  a: {prompt: y}\n",
                                           "valid"),
    "prompt_file": (V + "images:\n  a: {prompt_file: prompts/p.j2, size: '2:3'}\n", "valid"),
    "provider": (V + "provider:\n  base_url: http://127.0.0.1:8787\n  files_url: https://files.example.com/up\n"
                     "  api_key_env: MY_KEY\n  concurrency: 8\n  rate_limit: 30/min\n  task_timeout: 60\n"
                     "  max_credits: 10.5\nimages:\n  a: {prompt: x}\n", "valid"),
    "localhost urls": (V + "provider: {base_url: 'http://localhost:1', files_url: 'http://[::1]:2'}\n"
                           "images:\n  a: {prompt: x}\n", "valid"),
    "output and watch": (V + "output: {dir: out/assets, keep: 3}\nwatch: {confirm_over: 0, confirm_credits: 2.5}\n"
                             "images:\n  a: {prompt: x}\n", "valid"),
    "matrix": (V + "images:\n  'i/{{ item }}-{{ tier }}':\n    prompt: '{{ item }} {{ tier }}'\n    matrix:\n"
                   "      item: [sword, shield]\n      tier: [common, rare]\n      exclude: [{item: shield, tier: rare}]\n"
                   "      include: [{item: crown, tier: gold}, {tier: rare, frame: silver}]\n", "valid"),
    "yaml 1.1 words": (V + "images:\n  'f/{{ on }}':\n    prompt: '{{ on }}'\n    matrix: {on: [no, yes, off, On]}\n",
                       "valid"),
    "axis file": (V + "images:\n  'p/{{ p.sku }}':\n    prompt: '{{ p.title }}'\n    matrix: {p: {file: data/p.csv}}\n",
                  "valid"),
    "sizes": (V + "images:\n  a: {prompt: x, size: 1024x1536}\n  b: {prompt: x, size: auto}\n"
                  "  c: {prompt: x, size: '16:9', resolution: 4K}\n  d: {prompt: x, size: 16:9}\n", "valid"),
    "templated size": (V + "images:\n  'a{{ s | replace(\":\", \"x\") }}':\n    prompt: x\n    size: '{{ s }}'\n    matrix: {s: ['1:1', '3:2']}\n",
                       "valid"),
    "gpt-image-1.5": (img("model: gpt-image-1.5\nsize: '3:2'\nquality: low"), "valid"),
    "inputs and mask": (img("inputs: [refs/in.png, 'https://example.com/b.png']\nmask: refs/mask.png"), "valid"),
    "n take background": (img("n: 4\ntake: 3\nbackground: transparent"), "valid"),
    "vars": (V + "vars: {style: {a: [1, 2]}, yes: 1}\nimages:\n  a: {prompt: '{{ style.a[0] }}', vars: {x: 1}}\n",
             "valid"),
    "asset input": (V + "images:\n  a: {prompt: x}\n  b: {prompt: y, inputs: ['@a']}\n", "valid"),
    # --- broken, and the schema says so too ----------------------------------------------------
    "size 5:3": (img("size: '5:3'"), "invalid"),
    "size padded": (img("size: ' 1024x1024'"), "invalid"),
    "size zero-led": (img("size: 01024x1024"), "invalid"),
    "size number": (img("size: 1024"), "invalid"),
    "prompt and prompt_file": (img("prompt_file: prompts/p.j2"), "invalid"),
    "defaults both prompts": (V + "defaults: {prompt: x, prompt_file: prompts/p.j2}\nimages:\n  a: {}\n", "invalid"),
    "no prompt anywhere": (V + "images:\n  a: {size: '1:1'}\n", "invalid"),
    "one image without prompt": (V + "images:\n  a: {prompt: x}\n  b: {size: '1:1'}\n", "invalid"),
    "include empty entry": (img("matrix: {k: [1], include: [{}]}"), "invalid"),
    "exclude empty entry": (img("matrix: {k: [1], exclude: [{}]}"), "invalid"),
    "include not mappings": (img("matrix: {k: [1], include: [1, 2]}"), "invalid"),
    "exclude not a list": (img("matrix: {k: [1], exclude: {k: 1}}"), "invalid"),
    "empty axis": (img("matrix: {k: []}"), "invalid"),
    "matrix a list": (img("matrix: [1, 2]"), "invalid"),
    "axis file extra key": (img("matrix: {p: {file: data/p.csv, sheet: 1}}"), "invalid"),
    "unknown top key": (V + "imagez: {}\nimages:\n  a: {prompt: x}\n", "invalid"),
    "unknown image field": (img("promt: y"), "invalid"),
    "unknown provider field": (V + "provider: {concurency: 2}\nimages:\n  a: {prompt: x}\n", "invalid"),
    "concurrency text": (V + "provider: {concurrency: '8'}\nimages:\n  a: {prompt: x}\n", "invalid"),
    "concurrency zero": (V + "provider: {concurrency: 0}\nimages:\n  a: {prompt: x}\n", "invalid"),
    "keep text": (V + "output: {keep: '10'}\nimages:\n  a: {prompt: x}\n", "invalid"),
    "n boolean": (img("n: true"), "invalid"),
    "n eleven": (img("n: 11"), "invalid"),
    "take negative": (img("take: -1"), "invalid"),
    "take 1.5": (img("take: 1.5"), "invalid"),
    "task_timeout zero": (V + "provider: {task_timeout: 0}\nimages:\n  a: {prompt: x}\n", "invalid"),
    "max_credits negative": (V + "provider: {max_credits: -1}\nimages:\n  a: {prompt: x}\n", "invalid"),
    "version 2": (V.replace("1", "2") + "images:\n  a: {prompt: x}\n", "invalid"),
    "no images": (V + "images: {}\n", "invalid"),
    "missing version": ("images:\n  a: {prompt: x}\n", "invalid"),
    "http base_url": (V + "provider: {base_url: 'http://api.example.com'}\nimages:\n  a: {prompt: x}\n", "invalid"),
    "http files_url": (V + "provider: {files_url: 'http://127.0.0.1.evil.com'}\nimages:\n  a: {prompt: x}\n",
                       "invalid"),
    "url with credentials": (V + "provider: {base_url: 'https://u:p@api.example.com'}\nimages:\n  a: {prompt: x}\n",
                             "invalid"),
    "rate_limit words": (V + "provider: {rate_limit: fast}\nimages:\n  a: {prompt: x}\n", "invalid"),
    "rate_limit foreign digits": (V + "provider: {rate_limit: '\u0663/min'}\nimages:\n  a: {prompt: x}\n", "invalid"),
    "resolution 3K": (img("size: '1:1'\nresolution: 3K"), "invalid"),
    "model": (img("model: dall-e"), "invalid"),
    "quality": (img("quality: ultra"), "invalid"),
    "background": (img("background: clear"), "invalid"),
    "inputs empty": (img("inputs: []"), "invalid"),
    "inputs too many": (img("inputs: [" + ", ".join(["https://e.com/a.png"] * 17) + "]"), "invalid"),
    "api_key_env": (V + "provider: {api_key_env: BAD-NAME}\nimages:\n  a: {prompt: x}\n", "invalid"),
    "name with a space": (V + "images:\n  'hero image': {prompt: x}\n", "invalid"),
    # --- broken, where JSON Schema cannot say so -----------------------------------------------
    "gpt-image-1.5 ratio": (img("model: gpt-image-1.5\nsize: '16:9'"), "model"),
    "gpt-image-1.5 n": (img("model: gpt-image-1.5\nn: 2"), "model"),
    "resolution with WxH": (img("size: 1024x1024\nresolution: 2K"), "model"),
    "mask without inputs": (img("mask: https://example.com/m.png"), "model"),
    "undefined variable": (V + "images:\n  a: {prompt: '{{ nope }}'}\n", "templates"),
    "name renders a space": (V + "images:\n  '{{ x }}': {prompt: y, vars: {x: 'a b'}}\n", "templates"),
    "prompt_file missing": (V + "images:\n  a: {prompt_file: prompts/none.j2}\n", "files"),
    "axis file missing": (img("matrix: {p: {file: data/none.csv}}"), "files"),
    "input missing": (img("inputs: [refs/none.png]"), "files"),
    "name twice": (V + "images:\n  'a{{ k }}': {prompt: x, matrix: {k: [1, '1']}}\n", "across"),
    "names collide on disk": (V + "images:\n  x: {prompt: a, n: 2}\n  x-1: {prompt: b}\n", "across"),
    "exclude key not an axis": (img("matrix: {k: [1], exclude: [{j: 1}]}"), "across"),
    "unknown @asset": (img("inputs: ['@nope']"), "across"),
    "take 1.0": (img("take: 1.0"), "numbers"),
    "task_timeout nan": (V + "provider: {task_timeout: .nan}\nimages:\n  a: {prompt: x}\n", "numbers"),
    "rate_limit zero": (V + "provider: {rate_limit: 0/min}\nimages:\n  a: {prompt: x}\n", "rate_limit"),
    "output dir outside": (V + "output: {dir: ../elsewhere}\nimages:\n  a: {prompt: x}\n", "output_dir"),
}


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft202012Validator(schema_dict())


@pytest.fixture
def files(project):
    project.write("prompts/p.j2", "a prompt from a file")
    project.write("data/p.csv", "sku,title\nA1,a lamp\nB2,\"a chair, oak\"\n")
    (project.root / "refs").mkdir()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(project.root / "refs" / "in.png")
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(project.root / "refs" / "mask.png")
    return project


@pytest.mark.parametrize("case", list(CORPUS))
def test_schema_and_validate_agree(files, validator, case):
    text, expected = CORPUS[case]
    files.config(text)
    res = files.run("validate")
    data, _ = load_yaml(text, "starbuild.yaml")
    schema_errors = [e.message for e in validator.iter_errors(data)]
    if expected == "valid":
        assert res.exit_code == 0, res.stderr
        assert schema_errors == []
    elif expected == "invalid":
        assert res.exit_code == 2, res.stdout
        assert schema_errors, "the schema accepts what validate refuses"
    else:
        assert expected in LOOSER_THAN_VALIDATE
        assert res.exit_code == 2, res.stdout
        assert schema_errors == [], schema_errors


def test_every_looser_rule_is_exercised_and_documented():
    used = {expected for _, expected in CORPUS.values()} - {"valid", "invalid"}
    assert used == set(LOOSER_THAN_VALIDATE)
    readme = (REPO / "README.md").read_text()
    schema_text = (REPO / "schemas" / "starbuild.schema.json").read_text()
    for rule in LOOSER_THAN_VALIDATE.values():
        assert json.dumps(rule)[1:-1] in schema_text
        assert rule.split(":")[0] in readme


def test_examples_pass_both(validator):
    for example in sorted((REPO / "examples").glob("*/starbuild.yaml")):
        data, _ = load_yaml(example.read_text(), str(example))
        assert [e.message for e in validator.iter_errors(data)] == [], example
