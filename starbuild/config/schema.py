"""The JSON Schema of starbuild.yaml, generated from the config models.

pydantic writes the schema of each field; the rules that span fields (prompt or prompt_file,
one required somewhere; include/exclude entries) and the formats that ``load_config`` and the
planner check (sizes, URLs that may receive the key, names) are added here, so that an editor
refuses what ``starbuild validate`` refuses. Where JSON Schema cannot express a rule the schema
is looser than ``validate``: LOOSER_THAN_VALIDATE lists those rules, and a corpus test
(tests/test_schema_corpus.py) holds the two in agreement everywhere else.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starbuild.config.project import Config
from starbuild.models import GPT2_RATIOS, GPT15_SIZES

SCHEMA_ID = "https://starbuild.dev/schemas/starbuild.schema.json"

# What validate checks and this schema cannot; keys are used by the corpus test.
LOOSER_THAN_VALIDATE = {
    "model": "per-model rules: the sizes, resolutions, n, background and masks each model takes, and "
             "the prompt length (the model may come from defaults, the size from a template)",
    "templates": "templates: syntax, undefined variables, and what names, sizes and inputs render to",
    "files": "files: prompt_file, axis files, inputs and masks must exist inside the project as "
             "regular files of the right kind",
    "across": "rules across entries: unique names that do not collide on disk, exclude keys that are "
              "axes, cells left after exclude, @asset references and their cycles",
    "numbers": "numbers: 1.0 where a whole number is required (JSON Schema counts it as an integer), "
               "and NaN or infinity (JSON has neither)",
    "rate_limit": "rate_limit: at least one submission an hour",
    "output_dir": "output.dir: a folder inside the project, not reached through a symlink",
}

_RATIOS = sorted(set(GPT2_RATIOS) | {s for s in GPT15_SIZES if ":" in s})
SIZE_PATTERN = ("^(?:auto|" + "|".join(re.escape(r) for r in _RATIOS)
                + "|[1-9][0-9]{0,4}[x\u00d7X][1-9][0-9]{0,4}|.*\\{\\{.*)$")
# https anywhere; plain http only to localhost, 127.0.0.0/8 or [::1] (see config/urls.py).
URL_PATTERN = ("^(?:https://[^\\s/?#@]+(?:/[^\\s?#]*)?"
               "|http://(?:(?:[A-Za-z0-9-]+\\.)*localhost|127(?:\\.[0-9]{1,3}){3}|\\[::1\\])(?::[0-9]+)?(?:/[^\\s?#]*)?)$")
# A name: path characters, with templates anywhere.
NAME_PATTERN = "^(?:[A-Za-z0-9._/-]|\\{\\{.*?\\}\\}|\\{%.*?%\\})+$"
_ONE_PROMPT = {"anyOf": [{"required": ["prompt"]}, {"required": ["prompt_file"]}]}
_ENTRIES = {"type": "array", "items": {"type": "object", "minProperties": 1}}


def _tighten(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema["$defs"]
    for name in ("ImageFields", "Image"):
        model = defs[name]
        model["not"] = {"required": ["prompt", "prompt_file"]}
        _nullable(model["properties"]["size"])["pattern"] = SIZE_PATTERN
    matrix = _nullable(defs["Image"]["properties"]["matrix"])
    matrix["properties"] = {"include": _ENTRIES, "exclude": _ENTRIES}
    axis = matrix["additionalProperties"]["anyOf"]
    next(a for a in axis if a.get("type") == "array")["minItems"] = 1
    for field in ("base_url", "files_url"):
        defs["Provider"]["properties"][field]["pattern"] = URL_PATTERN
    images = schema["properties"]["images"]
    images["propertyNames"] = {"pattern": NAME_PATTERN}
    # An image needs a prompt or prompt_file of its own unless defaults give one.
    schema["anyOf"] = [
        {"required": ["defaults"], "properties": {"defaults": _ONE_PROMPT}},
        {"properties": {"images": {"additionalProperties": _ONE_PROMPT}}},
    ]
    return schema


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional field's schema."""
    return next((p for p in prop.get("anyOf", ()) if p.get("type") != "null"), prop)


def schema_dict() -> dict:
    schema = _tighten(Config.model_json_schema())
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "starbuild.yaml", "$comment": "Looser than `starbuild validate` only for: "
            + "; ".join(LOOSER_THAN_VALIDATE.values()), **schema}


def schema_text() -> str:
    return json.dumps(schema_dict(), indent=2, sort_keys=True) + "\n"
