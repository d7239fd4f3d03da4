"""The OpenAPI schema validates and lists every endpoint; the docs page is served locally, inside the CSP."""

from __future__ import annotations

import io
import re

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db


def api_routes() -> set[str]:
    """Every /api/v1/ route the URLconf has, written as the schema writes paths."""
    found = set()

    def walk(patterns, prefix):
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith("api/v1/"):
                found.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))

    walk(get_resolver().url_patterns, "")
    return found


def test_schema_validates_without_warnings_and_has_every_endpoint(client):
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    schema = yaml.safe_load(out.getvalue())
    validate_schema(schema)
    assert api_routes() == set(schema["paths"]) and len(api_routes()) == 4
    served = client.get("/api/schema/?format=json").json()
    assert set(served["paths"]) == api_routes()
    assert served["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key made with `manage.py api_key create`.",
    }
    create = served["paths"]["/api/v1/requests/"]["post"]
    assert {"201", "400", "401", "403", "422", "429"} <= set(create["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])


def test_docs_are_served_from_the_package_inside_the_csp(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "<style" not in html
    scripts = re.findall(r"<script([^>]*)>", html)
    assert scripts and all('src="/' in attributes for attributes in scripts)  # no inline script, no CDN
    assets = re.findall(r'(?:src|href)="/static/([^"?]+)"', html)
    assert len(assets) >= 3 and all(finders.find(asset) for asset in assets)
    init = re.search(r'<script src="(/api/docs/\?[^"]+)"', html).group(1).replace("&amp;", "&")
    script = client.get(init)
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()
