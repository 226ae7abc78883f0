"""Callbacks: signed with Standard Webhooks, delivered with their own retries, never to a private address."""
