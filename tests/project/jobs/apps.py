from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "tests.project.jobs"
    label = "jobs"
