"""A SQLAlchemy ``scoped_session`` (Flask-SQLAlchemy's ``db.session``) as ``conn=``: the task
joins the thread's current Session and its transaction."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import scoped_session, sessionmaker

from pgtasq import Client, Producer
from tests.conftest import count_tasks


def test_scoped_session_commits_and_rolls_back_with_its_session(pg_dsn: str, schema: str) -> None:
    engine = sa.create_engine(pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    db_session = scoped_session(sessionmaker(engine))
    producer = Producer(schema=schema)
    try:
        info = producer.enqueue("kept", conn=db_session)
        assert Client(schema=schema).get_task(info.id, conn=db_session).type == "kept"
        assert count_tasks(pg_dsn, schema) == 0  # in the session's open transaction
        db_session.commit()
        producer.enqueue("dropped", conn=db_session)
        db_session.rollback()
        assert count_tasks(pg_dsn, schema, type="kept") == 1
        assert count_tasks(pg_dsn, schema, type="dropped") == 0
    finally:
        db_session.remove()
        engine.dispose()
