"""Small leaks the outside review found: secrets in logs, plain http, docs from a CDN."""

from __future__ import annotations

import warnings

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from primitives_client.client import Client, InsecureTransportWarning
from storage.database import make_engine


def test_a_database_error_never_carries_its_bound_values():
    """An error's log line may land anywhere: a webhook secret or a password hash in its
    parameters would go with it."""
    engine = make_engine("sqlite://")
    with pytest.raises(DBAPIError) as caught, engine.connect() as connection:
        connection.execute(
            text("INSERT INTO nowhere VALUES (:secret)"), {"secret": "whsec_do-not-log-me"}
        )
    assert "whsec_do-not-log-me" not in str(caught.value)
    assert "hide_parameters" in str(caught.value)
    engine.dispose()


@pytest.mark.parametrize("url", ["http://api.example.com", "http://10.0.0.8:8000"])
def test_the_client_warns_of_plain_http_beyond_loopback(url):
    with pytest.warns(InsecureTransportWarning, match="plain http"):
        Client(url).close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://localhost:8000",
        "http://[::1]:8000",
        "https://api.example.com",
    ],
)
def test_the_client_is_quiet_on_loopback_and_https(url):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Client(url).close()
