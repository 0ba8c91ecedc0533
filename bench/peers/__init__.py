"""Peer benchmarks: procrastinate, django-tasks-db and Celery measured like pynenc-django.

Each module (``procrastinate_bench``, ``django_tasks_db_bench``, ``celery_bench``) runs the
peer's real worker as subprocesses and writes one JSON file in the shared peer format
(:func:`bench.peers.common.result_document`), so the report compares them in the same run.
"""
