from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from jose import jwt
from pydantic import ValidationError

from config.registry import ModelSpec, Registry
from config.settings import Settings
from serve_app.auth.security import create_access_token, decode_access_token


def test_wrong_id_message_is_generated_from_the_registry(registry):
    assert registry.wrong_id_message() == (
        "Model id was not correct. Choose from (id, name, type) [(1, 'YOLO', 'detection_model'), "
        "(2, 'SSD', 'detection_model'), (3, 'model_v1', 'classification_model')].")
    extra = ModelSpec(id=4, name="Mine", type="detection_model", backend="ultralytics",
                      weights="x.pt")
    assert "(4, 'Mine', 'detection_model')" in Registry([*registry.models, extra]) \
        .wrong_id_message()


def test_registry_refuses_duplicates_and_inconsistent_specs(registry):
    with pytest.raises(ValueError, match="unique"):
        Registry([registry.models[0], registry.models[0]])
    with pytest.raises(ValidationError, match="serves"):
        ModelSpec(id=9, name="X", type="classification_model", backend="ultralytics",
                  weights="x.pt")
    with pytest.raises(ValidationError, match="classes"):
        ModelSpec(id=9, name="X", type="detection_model", backend="torchvision_ssd",
                  arch="ssdlite320_mobilenet_v3_large", weights="x.pt")


@pytest.mark.parametrize("secret", ["", "changethis", "short"])
def test_production_refuses_a_placeholder_secret(secret):
    with pytest.raises(ValidationError, match="PRIMITIVES_JWT_SECRET"):
        Settings(environment="production", jwt_secret=secret)


def test_production_accepts_a_real_secret():
    assert Settings(environment="production", jwt_secret="k" * 48).jwt_secret \
        .get_secret_value() == "k" * 48


def test_tokens_round_trip_and_refuse_tampering():
    token = create_access_token(user_id=42, secret="s" * 40, algorithm="HS256",
                                expires_minutes=5)
    assert decode_access_token(token, secret="s" * 40, algorithm="HS256") == 42
    assert decode_access_token(token, secret="t" * 40, algorithm="HS256") is None
    header, payload, sig = token.split(".")
    assert decode_access_token(f"{header}.{payload}x.{sig}", secret="s" * 40,
                               algorithm="HS256") is None
    expired = jwt.encode({"sub": "42", "type": "access",
                          "exp": datetime.now(UTC) - timedelta(seconds=1)}, "s" * 40)
    assert decode_access_token(expired, secret="s" * 40, algorithm="HS256") is None
