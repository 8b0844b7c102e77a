"""The vocabulary every layer shares: statuses, events, transitions and the task state machine."""
