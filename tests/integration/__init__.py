"""Tests whose heaviest need is a Redis server (files may also hold fast tests; markers decide tiers)."""
