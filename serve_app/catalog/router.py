"""GET /api/models: the registry, with what each deployment reports about itself."""

from __future__ import annotations

from fastapi import APIRouter

from config.registry import ModelType
from serve_app.auth.dependencies import CurrentUser
from serve_app.catalog.schemas import ModelCatalog, ModelOut
from serve_app.dependencies import Queue, RegistryDep
from serve_app.tasks.schemas import Message

router = APIRouter(tags=["models"])


@router.get(
    "/api/models",
    response_model=ModelCatalog,
    summary="The models tasks can use",
    responses={401: {"model": Message, "description": "Not authenticated"}},
)
async def list_models(_user: CurrentUser, registry: RegistryDep, queue: Queue) -> ModelCatalog:
    described = await queue.describe_models()

    def entries(model_type: ModelType) -> list[ModelOut]:
        return [
            ModelOut(model_name=m.name, model_id=m.id, **described.get(m.id, {}))
            for m in registry.of_type(model_type)
        ]

    return ModelCatalog(
        detection_models=entries(ModelType.detection),
        classification_models=entries(ModelType.classification),
    )
