"""The config language: YAML 1.1 words stay text, plain values are strictly typed, CSV axes are
checked row by row, include/exclude entries are checked and matched as documented, template
errors name the asset and cell, and prompts are never HTML-escaped."""

from __future__ import annotations

import pytest

HEAD = "version: 1\nimages:\n"


def _plan(project) -> dict:
    res = project.run("plan", "--json")
    assert res.exit_code == 0, res.stderr
    return {a["name"]: a for a in res.json["assets"]}


def _refused(res, *words: str, line: int | None = None) -> None:
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    for word in words:
        assert word in res.stderr, (word, res.stderr)
    if line is not None:
        assert f"starbuild.yaml:{line}:" in res.stderr, res.stderr


# --- YAML 1.1 words ---------------------------------------------------------------------------


def test_yes_no_on_off_stay_text_in_values(project):
    project.config(HEAD + "  'flags/{{ country }}':\n    prompt: 'flag of country code {{ country }}'\n"
                          "    matrix:\n      country: [no, Yes, on, OFF, y, N]\n")
    assets = _plan(project)
    assert sorted(assets) == sorted(f"flags/{c}" for c in ["no", "Yes", "on", "OFF", "y", "N"])
    assert assets["flags/no"]["request"]["prompt"] == "flag of country code no"


def test_yes_no_on_off_stay_text_in_keys(project):
    project.config("version: 1\nvars:\n  yes: agreed\n  Off: quiet\nimages:\n  'a-{{ on }}':\n"
                   "    prompt: '{{ on }} {{ yes }} {{ Off }}'\n    matrix:\n      on: [x]\n")
    assert _plan(project)["a-x"]["request"]["prompt"] == "x agreed quiet"


def test_true_and_false_are_still_booleans(project):
    project.config(HEAD + "  a:\n    prompt: '{{ \"set\" if flag else \"unset\" }} {{ other }}'\n"
                          "    vars: {flag: true, other: FALSE}\n")
    assert _plan(project)["a"]["request"]["prompt"] == "set False"


# --- strict plain types ------------------------------------------------------------------------


@pytest.mark.parametrize("text,field,line", [
    ("version: 1\nprovider:\n  concurrency: '8'\nimages:\n  a: {prompt: x}\n", "provider.concurrency", 3),
    ("version: 1\noutput:\n  keep: '10'\nimages:\n  a: {prompt: x}\n", "output.keep", 3),
    ("version: 1\nprovider:\n  task_timeout: '600'\nimages:\n  a: {prompt: x}\n", "provider.task_timeout", 3),
    ("version: 1\nprovider:\n  max_credits: true\nimages:\n  a: {prompt: x}\n", "provider.max_credits", 3),
    ("version: 1\nwatch:\n  confirm_over: '3'\nimages:\n  a: {prompt: x}\n", "watch.confirm_over", 3),
    (HEAD + "  a:\n    prompt: x\n    n: true\n", "images.a.n", 5),
    (HEAD + "  a:\n    prompt: x\n    take: 1.5\n", "images.a.take", 5),
    (HEAD + "  a:\n    prompt: x\n    take: '2'\n", "images.a.take", 5),
    (HEAD + "  a:\n    prompt: 42\n", "images.a.prompt", 4),
    ("version: 1\ndefaults:\n  n: '2'\nimages:\n  a: {prompt: x}\n", "defaults.n", 3),
], ids=["concurrency-text", "keep-text", "timeout-text", "credits-bool", "confirm-text", "n-bool", "take-float",
        "take-text", "prompt-number", "defaults-n-text"])
def test_plain_values_are_strictly_typed(project, text, field, line):
    project.config(text)
    res = project.run("validate")
    _refused(res, field, line=line)
    assert "not" in res.stderr


def test_strict_type_message_says_how_to_write_it(project):
    project.config("version: 1\nprovider:\n  concurrency: '8'\nimages:\n  a: {prompt: x}\n")
    assert "write the number without quotes" in project.run("validate").stderr


# --- CSV axes ------------------------------------------------------------------------------------


def _csv_project(project, text: str):
    project.write("data/p.csv", text)
    project.config(HEAD + "  'p/{{ p.sku }}':\n    prompt: 'photo of {{ p.title }}'\n"
                          "    matrix:\n      p: {file: data/p.csv}\n")


@pytest.mark.parametrize("csv,words", [
    ("sku,title,price\nA1,a lamp,3\nB2,a chair\n", ["data/p.csv:3", "2 field(s)", "header has 3"]),
    ("sku,title\nA1,a lamp\nB2,a chair,oak\n", ["data/p.csv:3", "3 field(s)", "header has 2"]),
    ("sku,title,sku\nA1,a,b\n", ["data/p.csv:1", "'sku' twice"]),
    ("sku,,title\nA1,x,y\n", ["data/p.csv:1", "column 2", "no name"]),
], ids=["short-row", "long-row", "duplicate-header", "empty-header"])
def test_csv_axis_rows_must_match_the_header(project, csv, words):
    _csv_project(project, csv)
    for command in (["validate"], ["plan"], ["build", "--offline"]):
        _refused(project.run(*command), *words, line=6)
    assert not (project.root / "starbuild.lock").exists()


def test_csv_axis_with_quoted_commas_and_blank_lines_is_read(project):
    _csv_project(project, "sku,title\nA1,\"a chair, oak\"\n\nB2,a lamp\n")
    assets = _plan(project)
    assert assets["p/A1"]["request"]["prompt"] == "photo of a chair, oak"
    assert "None" not in assets["p/B2"]["request"]["prompt"]


# --- include and exclude --------------------------------------------------------------------------


MATRIX = HEAD + "  'i/{{{{ item }}}}-{{{{ tier }}}}':\n    prompt: '{{{{ item }}}} {{{{ tier }}}}'\n    matrix:\n" \
                "      item: [sword, shield]\n      tier: [common, rare]\n{extra}"


@pytest.mark.parametrize("key", ["include", "exclude"])
def test_empty_include_or_exclude_entries_are_errors(project, key):
    project.config(MATRIX.format(extra=f"      {key}:\n        - {{item: sword}}\n        - {{}}\n"))
    _refused(project.run("validate"), f"matrix.{key}.1", "empty", line=10)


def test_exclude_that_matches_nothing_warns(project):
    project.config(MATRIX.format(extra="      exclude:\n        - {item: sword, tier: rar}\n"))
    res = project.run("validate")
    assert res.exit_code == 0, res.stderr
    assert "warning: " in res.stderr and "starbuild.yaml:9:" in res.stderr and "matches no cell" in res.stderr
    assert "did you mean tier: rare?" in res.stderr
    plan = project.run("plan", "--json")
    assert plan.exit_code == 0 and len(plan.json["assets"]) == 4  # stdout stays clean JSON
    assert "matches no cell" in plan.stderr


def test_exclude_that_matches_gives_no_warning(project):
    project.config(MATRIX.format(extra="      exclude:\n        - {item: sword, tier: rare}\n"))
    res = project.run("validate")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.stderr
    assert sorted(_plan(project)) == ["i/shield-common", "i/shield-rare", "i/sword-common"]


def test_matching_is_case_sensitive(project):
    project.config(MATRIX.format(extra="      exclude:\n        - {tier: Rare}\n"))
    res = project.run("validate")
    assert res.exit_code == 0
    assert "did you mean tier: rare?" in res.stderr and "case-sensitively" in res.stderr
    assert len(_plan(project)) == 4  # nothing excluded


def test_numbers_and_strings_match_by_their_text(project):
    project.config(HEAD + "  'n/{{ size }}-{{ k }}':\n    prompt: '{{ size }} {{ k }} {{ extra | default(\"-\") }}'\n"
                          "    matrix:\n      size: [1, 2, 3]\n      k: ['10', x]\n"
                          "      exclude:\n        - {size: '1'}\n        - {k: 10, size: 2}\n"
                          "      include:\n        - {size: '3', extra: big}\n")
    res = project.run("validate")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.stderr
    assets = _plan(project)
    assert sorted(assets) == ["n/2-x", "n/3-10", "n/3-x"]
    assert assets["n/3-x"]["request"]["prompt"] == "3 x big"


# --- template errors name the asset and the cell ------------------------------------------------------


def test_template_error_names_the_asset_and_cell(project):
    project.config(MATRIX.format(extra="") + "    vars: {}\n")
    project.config(HEAD + "  'i/{{ item }}':\n    prompt: \"{% if item == 'shield' %}{{ nope }}{% endif %}{{ item }}\"\n"
                          "    matrix:\n      item: [sword, shield]\n")
    res = project.run("validate")
    _refused(res, "nope", "asset 'i/shield'", "cell {item: shield}", line=4)


def test_prompt_file_error_names_the_asset_and_cell(project):
    project.write("prompts/p.j2", "line one\n{{ item.colour }}\n")
    project.config(HEAD + "  'i/{{ item.name }}':\n    prompt_file: prompts/p.j2\n"
                          "    matrix:\n      item: [{name: a, colour: red}, {name: b}]\n")
    res = project.run("validate")
    _refused(res, "prompts/p.j2, line 2", "asset 'i/b'", "cell {item: {'name': 'b'}}")


def test_name_template_error_names_the_cell(project):
    project.config(HEAD + "  'i/{{ item.name }}':\n    prompt: x\n    matrix:\n      item: [{name: a}, {other: b}]\n")
    res = project.run("validate")
    _refused(res, "cell {item: {'other': 'b'}}")


# --- prompts are never HTML-escaped --------------------------------------------------------------------


@pytest.mark.parametrize("template,expected", [
    ("{{ v | tojson }}", '{"q": "<b> & \'x\'"}'),
    ("{{ v.q | tojson }}", '"<b> & \'x\'"'),
    ("{{ v.q | e }}", "<b> & 'x'"),
    ("{{ v.q | escape }}", "<b> & 'x'"),
    ("{{ v.q | forceescape }}", "<b> & 'x'"),
    ("{{ (v.q | safe) + ' <i>' }}", "<b> & 'x' <i>"),
    ("{{ v.q | safe | replace('x', '<y>') }}", "<b> & '<y>'"),
    ("{{ v.q | tojson(indent=1) }}", '"<b> & \'x\'"'),
], ids=["tojson-mapping", "tojson-string", "e", "escape", "forceescape", "safe-plus", "safe-replace", "indent"])
def test_prompts_are_never_html_escaped(project, template, expected):
    project.config(HEAD + f"  a:\n    prompt: {template!r}\n    vars:\n      v: {{q: \"<b> & 'x'\"}}\n".replace(
        "prompt: '", "prompt: \"").replace("'\n    vars", "\"\n    vars"))
    assert _plan(project)["a"]["request"]["prompt"] == expected


def test_defaults_with_both_prompts_is_an_error(project):
    project.write("prompts/p.j2", "x")
    project.config("version: 1\ndefaults:\n  prompt: x\n  prompt_file: prompts/p.j2\nimages:\n  a: {}\n")
    _refused(project.run("validate"), "defaults.prompt", "not both", line=3)
