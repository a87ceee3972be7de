"""Keeps the ml_model table in step with the configured registry."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config.registry import Registry
from storage.database import utcnow
from storage.models import MlModel


def sync_models(*, db: Session, registry: Registry) -> None:
    """Upsert one row per registry entry (safe when several replicas start at once)."""
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    for spec in registry.models:
        stmt = dialect.insert(MlModel).values(id=spec.id, name=spec.name, type=spec.type.value,
                                              updated_at=utcnow())
        stmt = stmt.on_conflict_do_update(
            index_elements=[MlModel.id],
            set_={"name": spec.name, "type": spec.type.value, "updated_at": utcnow()},
        )
        db.execute(stmt)
    db.commit()
