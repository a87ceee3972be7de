"""The web page (docs/api.md §E8) is served without a token, self-contained."""

from __future__ import annotations

import re

from harness.no_queue import NoQueue


def test_the_page_and_its_files_are_served_from_this_origin_only(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert '<label for="username">' in html and '<label for="password">' in html
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/static/") for s in sources)  # nothing from a CDN
    for source in sources:
        assert client.get(source).status_code == 200
    script = client.get("/static/app.js").text
    assert "sessionStorage" in script and "document.cookie" not in script
    assert "innerHTML" not in script  # results are put on the page as text only


def test_the_page_is_not_part_of_the_api_schema(client):
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_the_login_form_never_puts_a_password_in_a_url(client):
    """Without a method a form is sent by GET: had the script not loaded, the password
    would have gone into the address bar, the history and every access log."""
    found = re.search(r'<form id="login-form"[^>]*>', client.get("/").text)
    assert found is not None
    form = found.group(0)
    assert 'method="post"' in form and 'action="/oauth/login"' in form


def test_production_serves_the_schema_but_no_docs_from_a_cdn(settings, registry, sessions):
    from fastapi.testclient import TestClient

    from config.settings import Environment
    from serve_app.main import create_app
    from tests.api.conftest import JWT_SECRET

    production = settings.model_copy(
        update={"environment": Environment.production, "jwt_secret": JWT_SECRET}
    )
    with TestClient(
        create_app(
            settings=production, registry=registry, session_factory=sessions, queue=NoQueue()
        )
    ) as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/redoc").status_code == 404
        assert client.get("/openapi.json").status_code == 200
