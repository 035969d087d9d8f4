"""The model card: a JSON record and its self-contained HTML rendering (inline CSS and SVG)."""
from __future__ import annotations

import json
from importlib import resources

import jinja2


def _template_text(name: str) -> str:
    return resources.files("creditgov").joinpath("templates", name).read_text(encoding="utf-8")


def render_html(card: dict, importance_svg: str) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_template_text("model_card.html")).render(
        card=card, css=_template_text("base.css"), importance_svg=importance_svg)


def to_json(card: dict) -> str:
    return json.dumps(card, indent=2, ensure_ascii=False, sort_keys=True, default=str)
