"""pgtasq for Django: add ``"pgtasq.contrib.django"`` to ``INSTALLED_APPS``.

- ``conn=connection``: enqueue on Django's connection (psycopg 3), inside ``transaction.atomic``
  (this works without the app; see `pgtasq._django_connections`).
- Settings: ``PGTASQ = {"SCHEMA": …, "DATABASE": …, "CONSUMER": "myapp.tasks:consumer"}``
  (`pgtasq.contrib.django.conf`).
- ``manage.py migrate`` creates pgtasq's tables (the app's migration runs pgtasq's Alembic
  migrations: the same SQL as ``pgtasq migrate``).
- ``manage.py pgtasq_worker`` runs the worker of ``PGTASQ["CONSUMER"]``; ``manage.py pgtasq …``
  runs any ``pgtasq`` command on the project's database.
- Read-only admin pages of tasks and queues.
- `pgtasq.contrib.django.handlers.django_handler`: ORM handlers close stale connections as a
  request would.
- Django's tasks API (``TASKS``): `pgtasq.contrib.django.backend.PgtasqBackend`.

Nothing is imported here, so that Django can load the app before its settings are ready.
docs/integrations.md has the whole story.
"""
