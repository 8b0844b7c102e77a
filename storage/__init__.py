"""Persistence of runs, tasks and events. Knows nothing about Slack or LLMs."""
