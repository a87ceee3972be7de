from __future__ import annotations

from pydantic import BaseModel, Field


class ModelOut(BaseModel):
    model_name: str
    model_id: int
    # Extensions: what the running deployment reports about itself.
    classes: list[str] | None = None
    weights_sha256: str | None = Field(default=None, description="checksum of the loaded weights")
    device: str | None = None
    ready: bool = Field(
        default=False,
        description="a replica answered just now, or the model is scaled to zero (its next "
        "task starts one)",
    )
    replicas: int | None = Field(
        default=None, description="replicas running now; 0: scaled to zero until a task needs it"
    )


class ModelCatalog(BaseModel):
    detection_models: list[ModelOut]
    classification_models: list[ModelOut]
