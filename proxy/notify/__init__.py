"""Notifications: the Slack app and signed outbound webhooks, observers of workflow and anomaly events."""
