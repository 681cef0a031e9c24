"""The worker fleet: the Celery app and its queues, the task chain, a worker process and its
batcher, the reconciler that re-drives lost work, the Redis transport, and the producer's `Client`."""
