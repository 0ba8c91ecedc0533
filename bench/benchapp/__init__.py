"""The bench project's Django app: one trivial task and SQL statement counting."""
