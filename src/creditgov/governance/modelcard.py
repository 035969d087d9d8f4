"""The model card: a JSON record and its self-contained HTML rendering (inline CSS and SVG)."""
from __future__ import annotations

import json
import tempfile
from importlib import resources
from pathlib import Path

import jinja2

from creditgov.governance import registry


def _template_text(name: str) -> str:
    return resources.files("creditgov").joinpath("templates", name).read_text(encoding="utf-8")


def render_html(card: dict, importance_svg: str, frontier_svg: str = "") -> str:
    """`frontier_svg`: the search's candidate frontier (jobs/search.py), shown with card["search"]."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_template_text("model_card.html")).render(
        card=card, css=_template_text("base.css"), importance_svg=importance_svg, frontier_svg=frontier_svg)


def to_json(card: dict) -> str:
    return json.dumps(card, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def record_justification(run_id: str, justification: str, approver: str, at: str) -> None:
    """The approver's business-necessity justification onto the model card of a version's training run: the card
    JSON gains `search.business_necessity` and the HTML is rendered again (same importance chart)."""
    import mlflow  # heavy: see registry.configure

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model_card", dst_path=tmp))
        card = json.loads((local / "model_card.json").read_text(encoding="utf-8"))
        svg, frontier = (_artifact_text(run_id, path, tmp) for path in ("explain/shap_importance.svg",
                                                                          "search/frontier.svg"))
    card.setdefault("search", {})["business_necessity"] = {"text": justification, "approver": approver, "at": at}
    c = registry.client()
    c.log_text(run_id, to_json(card), "model_card/model_card.json")
    c.log_text(run_id, render_html(card, svg, frontier), "model_card/model_card.html")


def _artifact_text(run_id: str, path: str, tmp: str) -> str:
    """A text artifact of a run; "" when the run has none (a version not searched has no frontier)."""
    import mlflow  # heavy: see registry.configure

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)).read_text(
            encoding="utf-8")
    except Exception:  # MLflow raises its own and OSError kinds for a missing artifact
        return ""
