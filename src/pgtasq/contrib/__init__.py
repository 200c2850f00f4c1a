"""Integrations with frameworks: `pgtasq.contrib.django`."""
