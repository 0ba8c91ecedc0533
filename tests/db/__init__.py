"""The database layer: transactions and signals, prepared statements, the vendor layer,
the planner's first ANALYZE."""
