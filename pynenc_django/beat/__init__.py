"""django-celery-beat's ``PeriodicTask`` rows as pynenc's database schedule.

    pip install pynenc-django[beat]
    INSTALLED_APPS += ["django_celery_beat", "pynenc_django.beat"]

django-celery-beat's models, schedule classes and admin are reused as they are; this app
adds only the scheduling glue: the evaluator the atomic service runs every second
(:func:`pynenc_django.beat.scheduler.run_due_periodic_tasks`), one
:class:`~pynenc_django.beat.models.PeriodicTaskRun` per due time it handled, an admin whose
task chooser and "Run selected tasks" speak pynenc, and a system check for task names
pynenc does not know.
"""
