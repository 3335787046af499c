"""The JSON Schema of starbuild.yaml, generated from the config models."""

from __future__ import annotations

import json

from starbuild.config.project import Config

SCHEMA_ID = "https://starbuild.dev/schemas/starbuild.schema.json"


def schema_dict() -> dict:
    schema = Config.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "starbuild.yaml", **schema}


def schema_text() -> str:
    return json.dumps(schema_dict(), indent=2, sort_keys=True) + "\n"
