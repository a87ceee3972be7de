"""Keeps the ml_model table in step with the configured registry."""

from __future__ import annotations

from sqlalchemy.orm import Session

from config.registry import Registry
from storage.database import upsert_insert, utcnow
from storage.models import MlModel


def sync_models(*, db: Session, registry: Registry) -> None:
    """Upsert one row per registry entry (safe when several replicas start at once)."""
    for spec in registry.models:
        stmt = upsert_insert(db, MlModel).values(
            id=spec.id, name=spec.name, type=spec.type.value, updated_at=utcnow()
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[MlModel.id],
            set_={"name": spec.name, "type": spec.type.value, "updated_at": utcnow()},
        )
        db.execute(stmt)
    db.commit()
