"""murmur's compute: audio → chunks → features (cpu/) and features → segments (gpu/).

Nothing here imports Celery, Redis or a database: the stages are plain functions
so the embedded runner and the workers call the very same code.
"""
