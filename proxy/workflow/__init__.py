"""The access workflow: requests, approvals, grants and sweeps, over the workflow store."""
