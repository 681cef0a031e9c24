"""The Celery edge and the runners, in rooms by concern.

`jobs` checks a request and creates its row (every door); `stages` are the four
steps of a job, over a `context`; `fleet/` runs them as Celery tasks across
workers, `embedded/` in one process; `tensors/` carry features from prepare to
decode; `outputs/` is what leaves with a job (formats, S3, webhooks, uploads);
`operations/` watches the fleet (exporter, health).
"""
