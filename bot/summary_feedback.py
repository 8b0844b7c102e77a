"""The feedback buttons (👍/👎) under each summary: Slack's `context_actions` block.

Stand-in until the rendering part's builder (with its action handler and storage) lands: the
block shape follows Slack's reference for `feedback_buttons`.
"""

from __future__ import annotations

from typing import Any

FEEDBACK_ACTION = "dagbot_feedback"


def feedback_blocks(run_id: str) -> list[dict[str, Any]]:
    """The blocks that ask the reader to rate a run's summary."""
    return [
        {
            "type": "context_actions",
            "elements": [
                {
                    "type": "feedback_buttons",
                    "action_id": FEEDBACK_ACTION,
                    "positive_button": {
                        "text": {"type": "plain_text", "text": "Good answer"},
                        "accessibility_label": "Mark this answer as good",
                        "value": f"good:{run_id}",
                    },
                    "negative_button": {
                        "text": {"type": "plain_text", "text": "Bad answer"},
                        "accessibility_label": "Mark this answer as bad",
                        "value": f"bad:{run_id}",
                    },
                }
            ],
        }
    ]
