"""The engine: plan model and validation, planner, executors, run loop. Knows nothing of Slack."""
