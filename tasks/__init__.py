"""The edge: the Celery app and task chain, both runners, the tensor store, producers and the CLI."""
