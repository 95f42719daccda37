"""The audit trail: records and their hash chain, the log line, the writer, its spool, the store."""
