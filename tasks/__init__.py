"""The edge: runners (embedded now, Celery later), tensor store, output formats, CLI."""
