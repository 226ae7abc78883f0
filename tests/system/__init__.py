"""Tests that start processes: workers, the CLI, redis-servers, the compose stack."""
