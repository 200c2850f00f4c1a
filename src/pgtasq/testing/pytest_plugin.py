"""pgtasq's pytest plugin: fixtures for tests of code that uses pgtasq.

pytest loads it wherever pgtasq is installed (the ``pytest11`` entry point ``pgtasq``;
``-p no:pgtasq`` turns it off). Loading it imports pgtasq and nothing heavier (no
SQLAlchemy, no Alembic, no server): a fixture does its work only when a test asks for it.

- ``pgtasq_dsn`` (session): ``$PGTASQ_TEST_DSN`` when set, else an embedded PostgreSQL
  started for the session in a temporary folder (``pip install 'pgtasq[embedded]'``) and
  stopped after it. Override it in your conftest.py to use a database of yours.
- ``pgtasq_schema``: a fresh pgtasq schema for one test, migrated, dropped after it. Pass
  it as ``schema=`` to Producer, Consumer, Client and the assertions.
- ``pgtasq_producer`` / ``pgtasq_client``: a `Producer` and a `Client` on that schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pgtasq.client import Client
    from pgtasq.producer import Producer


@pytest.fixture(scope="session")
def pgtasq_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL DSN: ``$PGTASQ_TEST_DSN``, or a session-wide embedded server."""
    from pgtasq import _embedded
    from pgtasq.testing import TEST_DSN_ENV

    dsn = os.environ.get(TEST_DSN_ENV)
    if dsn:
        yield dsn
        return
    server = _embedded.start(tmp_path_factory.mktemp("pgtasq-embedded"))
    with server:
        yield _embedded.uri(server)


@pytest.fixture
def pgtasq_schema(pgtasq_dsn: str) -> Iterator[str]:
    """A migrated pgtasq schema of this test's own, dropped after it."""
    from pgtasq.testing import isolated_schema

    with isolated_schema(pgtasq_dsn) as name:
        yield name


@pytest.fixture
def pgtasq_producer(pgtasq_dsn: str, pgtasq_schema: str) -> Iterator[Producer]:
    """A `Producer` on ``pgtasq_schema``, closed after the test."""
    from pgtasq.producer import Producer

    with Producer(pgtasq_dsn, schema=pgtasq_schema) as producer:
        yield producer


@pytest.fixture
def pgtasq_client(pgtasq_dsn: str, pgtasq_schema: str) -> Iterator[Client]:
    """A `Client` on ``pgtasq_schema``, closed after the test."""
    from pgtasq.client import Client

    with Client(pgtasq_dsn, schema=pgtasq_schema) as client:
        yield client
