"""The Slack surface and the command line of dagbot."""
