"""murmur's compute: audio → chunks → features (cpu/), features → segments (gpu/),
and what both speak: a job's options, the transcript records, the errors.

Nothing here imports Celery, Redis or a database: the stages are plain functions
so the embedded runner and the workers call the very same code.
"""
