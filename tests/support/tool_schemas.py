"""JSON schemas of the tools the forced-tool-call tests offer, one set for every protocol: a flat
one (`get_weather`) and a nested one with an enum and bounds (`book_table`), small enough that the
bundled base model fills them quickly under a grammar."""

from __future__ import annotations

from typing import Any

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
BOOKING: dict[str, Any] = {
    "type": "object",
    "properties": {
        "restaurant": {"type": "string", "maxLength": 24},
        "party": {
            "type": "object",
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 12},
                "seating": {"type": "string", "enum": ["indoor", "outdoor", "bar"]},
            },
            "required": ["size", "seating"],
            "additionalProperties": False,
        },
    },
    "required": ["restaurant", "party"],
    "additionalProperties": False,
}
SCHEMAS: dict[str, dict[str, Any]] = {"get_weather": WEATHER, "book_table": BOOKING}
