"""The django-tasks-db benchmark's app: the task, plus readiness and statement-count hooks."""
