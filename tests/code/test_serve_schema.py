"""The service's OpenAPI schema is built from each bundled spec's catalogue (issue 16 point 2)."""
from __future__ import annotations

import pytest

from creditgov.jobs import serve
from creditgov.spec import load_spec


@pytest.mark.parametrize("name", ["application.yaml", "behaviour.yaml"])
def test_every_bundled_spec_gives_a_request_schema_with_each_catalogue_field(repo_root, name):
    spec = load_spec(repo_root / "pipelines" / name)
    schema = serve.openapi_schema(spec)
    props = {}
    _properties(schema, props)
    assert not {f.name for f in spec.features if f.derived} & set(props)  # computed by the model, never sent
    for f in spec.input_features:
        assert f.name in props, f.name
        kinds = props[f.name]["type"] if isinstance(props[f.name]["type"], list) else [props[f.name]["type"]]
        if f.type == "text":  # free text (names, phones in the behaviour catalogue): a plain string, no enum
            assert "string" in kinds and "enum" not in props[f.name]
        elif f.type == "numeric":
            assert "number" in kinds and props[f.name]["minimum"] == f.range[0]
        else:
            assert [c for c in props[f.name]["enum"] if c is not None] == list(f.categories)


def _properties(node, out: dict) -> None:
    """Every named property of every object schema in the document."""
    if isinstance(node, dict):
        for k, v in (node.get("properties") or {}).items():
            if isinstance(v, dict) and "type" in v:
                out.setdefault(k, v)
        for v in node.values():
            _properties(v, out)
    elif isinstance(node, list):
        for v in node:
            _properties(v, out)
