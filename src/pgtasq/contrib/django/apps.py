"""The Django app config of `pgtasq.contrib.django`."""

from __future__ import annotations

from django.apps import AppConfig


class PgtasqConfig(AppConfig):
    name = "pgtasq.contrib.django"
    label = "pgtasq"
    verbose_name = "pgtasq"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pgtasq.contrib.django import conf

        conf.get()  # a bad PGTASQ setting fails at startup, not at the first enqueue
