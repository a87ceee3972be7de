from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from jose import jwt
from pydantic import ValidationError

from config.registry import ModelSpec, Registry
from config.settings import REPO_ROOT, Settings
from serve_app.auth.security import create_access_token, decode_access_token


def test_wrong_id_message_is_generated_from_the_registry(registry):
    assert registry.wrong_id_message() == (
        "Model id was not correct. Choose from (id, name, type) [(1, 'YOLO', 'detection_model'), "
        "(2, 'SSD', 'detection_model'), (3, 'model_v1', 'classification_model')]."
    )
    extra = ModelSpec(
        id=4, name="Mine", type="detection_model", backend="ultralytics", weights="x.pt"
    )
    assert (
        "(4, 'Mine', 'detection_model')" in Registry([*registry.models, extra]).wrong_id_message()
    )


def test_registry_refuses_duplicates_and_inconsistent_specs(registry):
    with pytest.raises(ValueError, match="unique"):
        Registry([registry.models[0], registry.models[0]])
    with pytest.raises(ValidationError, match="serves"):
        ModelSpec(
            id=9, name="X", type="classification_model", backend="ultralytics", weights="x.pt"
        )
    with pytest.raises(ValidationError, match="classes"):
        ModelSpec(
            id=9,
            name="X",
            type="detection_model",
            backend="torchvision_ssd",
            arch="ssdlite320_mobilenet_v3_large",
            weights="x.pt",
        )


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("", "is not set"),
        ("abc123", "shorter than 32"),
        ("set me: 48 random characters or more", "whitespace"),  # the old example's words
        ("k" * 48, "bits of entropy"),
        ("test-secret-" + "x" * 40, "bits of entropy"),
        ("changethis" * 4, "bits of entropy"),
        ("Tr0ub4dor&3-Tr0ub4dor&3-Tr0ub4dor&3", "bits of entropy"),
        ("correct-horse-battery-staple-" * 2, "repeats"),
        ("integration-" + "0123456789abcdef" * 4, "repeats"),
    ],
)
def test_production_refuses_a_secret_that_is_not_random(secret, reason, monkeypatch):
    monkeypatch.delenv("PRIMITIVES_JWT_SECRET", raising=False)
    with pytest.raises(ValidationError, match="PRIMITIVES_JWT_SECRET") as caught:
        Settings(environment="production", jwt_secret=secret)
    message = str(caught.value)
    assert reason in message
    if secret:
        assert secret not in message  # a refused secret is never echoed


@pytest.mark.parametrize(
    "make",
    [
        lambda: secrets.token_urlsafe(48),
        lambda: secrets.token_urlsafe(32),
        lambda: secrets.token_hex(32),
        lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
    ],
    ids=["token_urlsafe(48)", "token_urlsafe(32)", "token_hex(32)", "openssl rand -base64 32"],
)
def test_production_accepts_generated_secrets(make):
    for _ in range(200):
        secret = make()
        assert (
            Settings(environment="production", jwt_secret=secret).jwt_secret.get_secret_value()
            == secret
        )


def test_the_example_kubernetes_secret_ships_without_a_value():
    example = yaml.safe_load((REPO_ROOT / "deploy/kuberay/secret.example.yaml").read_text())
    assert example["stringData"]["jwt-secret"] == ""
    with pytest.raises(ValidationError):
        Settings(environment="production", jwt_secret=example["stringData"]["jwt-secret"])


def test_a_postgresql_url_without_an_explicit_environment_refuses_to_start(monkeypatch):
    monkeypatch.delenv("PRIMITIVES_ENVIRONMENT", raising=False)
    url = "postgresql+psycopg2://u@127.0.0.1/db"
    with pytest.raises(ValidationError, match="PRIMITIVES_ENVIRONMENT is not set"):
        Settings(database_url=url)
    assert Settings(database_url=url, environment="development").environment == "development"
    monkeypatch.setenv("PRIMITIVES_ENVIRONMENT", "development")
    assert Settings(database_url=url).environment == "development"  # set in the environment
    monkeypatch.delenv("PRIMITIVES_ENVIRONMENT")
    assert Settings().environment == "development"  # the embedded SQLite default


def test_tokens_round_trip_and_refuse_tampering():
    token = create_access_token(user_id=42, secret="s" * 40, algorithm="HS256", expires_minutes=5)
    assert decode_access_token(token, secret="s" * 40, algorithm="HS256") == 42
    assert decode_access_token(token, secret="t" * 40, algorithm="HS256") is None
    header, payload, sig = token.split(".")
    assert (
        decode_access_token(f"{header}.{payload}x.{sig}", secret="s" * 40, algorithm="HS256")
        is None
    )
    expired = jwt.encode(
        {"sub": "42", "type": "access", "exp": datetime.now(UTC) - timedelta(seconds=1)}, "s" * 40
    )
    assert decode_access_token(expired, secret="s" * 40, algorithm="HS256") is None


def test_the_gpu_overlay_changes_only_what_it_names():
    from config.serve_config import load_app_config
    from config.settings import REPO_ROOT

    base = load_app_config()
    gpu = load_app_config(overlays=[REPO_ROOT / "config" / "gpu.yaml"])
    assert gpu.registry.models == base.registry.models  # the registry stays in one place
    assert gpu.args.queue.concurrency > base.args.queue.concurrency
    yolo, base_yolo = gpu.options_for("YOLO"), base.options_for("YOLO")
    assert yolo["ray_actor_options"]["num_gpus"] > 0
    assert yolo["user_config"]["max_batch_size"] > base_yolo["user_config"]["max_batch_size"]
    # what the overlay leaves out is the base file's
    assert (
        yolo["autoscaling_config"]["downscale_delay_s"]
        == base_yolo["autoscaling_config"]["downscale_delay_s"]
    )
    total_gpus = sum(
        gpu.options_for(m.name)["ray_actor_options"]["num_gpus"]
        * gpu.options_for(m.name)["autoscaling_config"]["max_replicas"]
        for m in gpu.registry.models
    )
    assert total_gpus <= 1.0  # every replica fits on the one card


def test_ray_env_is_read_as_key_value_lines(tmp_path):
    from config.serve_config import load_ray_env

    path = tmp_path / "ray.env"
    path.write_text("# comment\n\nA=1\n B = two \n")
    assert load_ray_env(path) == {"A": "1", "B": "two"}
    assert load_ray_env()["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"


@pytest.mark.parametrize(
    ("host", "environment", "refused"),
    [
        ("0.0.0.0", None, True),
        ("10.0.0.5", None, True),
        ("0.0.0.0", "production", False),
        ("0.0.0.0", "development", False),  # chosen explicitly
        ("127.0.0.1", None, False),
        (None, None, False),  # no controller to ask
    ],
)
def test_development_that_nobody_chose_never_serves_the_network(
    host, environment, refused, monkeypatch
):
    from deployments.app import check_exposure

    monkeypatch.delenv("PRIMITIVES_ENVIRONMENT", raising=False)
    settings = Settings(
        **(
            {"environment": environment, "jwt_secret": secrets.token_urlsafe(48)}
            if environment
            else {}
        )
    )
    if refused:
        with pytest.raises(RuntimeError, match="PRIMITIVES_ENVIRONMENT is not set"):
            check_exposure(settings, host)
    else:
        check_exposure(settings, host)


def test_the_noop_backend_is_for_benchmarks_only():
    """Either type, no weights; never in what ships (the file, or any overlay of config/)."""
    from config.serve_config import load_app_config

    spec = ModelSpec(id=5, name="Nothing", type="classification_model", backend="noop")
    assert spec.weights is None
    with pytest.raises(ValueError, match="no weights"):
        _ = spec.weights_path
    with pytest.raises(ValidationError, match="weights"):
        ModelSpec(id=6, name="X", type="detection_model", backend="ultralytics")
    shipped = [load_app_config()] + [
        load_app_config(overlays=[path]) for path in sorted((REPO_ROOT / "config").glob("*.yaml"))
    ]
    for config in shipped:
        assert all(m.backend != "noop" for m in config.registry.models)


def test_one_users_drawings_must_leave_room_for_others():
    Settings(drawings_per_user=3, drawings_per_replica=4)
    with pytest.raises(ValidationError, match="one user would hold every drawing"):
        Settings(drawings_per_user=4, drawings_per_replica=4)


def test_a_canary_is_the_model_with_its_own_weights_and_a_share(registry):
    from config.registry import ModelSpec

    yolo = registry.by_name("YOLO").model_dump(mode="json")
    spec = ModelSpec.model_validate(
        {**yolo, "canary": {"weights": "weights/yolo_obb_v2.pt", "share": 0.1}}
    )
    canary = spec.canary_spec()
    assert spec.canary_name == "YOLO-canary"
    assert canary is not None and str(canary.weights) == "weights/yolo_obb_v2.pt"
    assert canary.canary is None and canary.id == spec.id and canary.image_size == spec.image_size
    assert ModelSpec.model_validate(yolo).canary_spec() is None
    for bad in ({"weights": yolo["weights"], "share": 0.1}, {"weights": "w.pt", "share": 1.0}):
        with pytest.raises(ValidationError):
            ModelSpec.model_validate({**yolo, "canary": bad})
