"""What a worker process runs beside the tasks: wiring, Redis, upkeep, the kombu contract, Flower, metrics, logging."""
