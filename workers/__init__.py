"""murmur's compute: audio → chunks → features (cpu/), features → segments (gpu/),
and what both speak: a job's options, the transcript records, the errors, the window.

Nothing here imports Celery, Redis, a database or the settings: these are plain
functions that take what they need as arguments, so the embedded runner and the
workers, through the stages in `murmur.tasks.stages`, call the very same code.
"""
