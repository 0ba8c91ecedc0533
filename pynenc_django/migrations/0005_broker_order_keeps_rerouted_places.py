"""Queues are ordered by the time an invocation was first queued (``created_at``), so a
rerouted invocation keeps its place. The new index comes first: no moment without one."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('pynenc_django', '0004_mysql_status_history_triggers'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='brokermessage',
            index=models.Index(fields=['app_id', 'queue', '-priority', 'created_at', 'id'], name='pynenc_broker_order_idx'),
        ),
        migrations.RemoveIndex(
            model_name='brokermessage',
            name='pynenc_broker_next_idx',
        ),
    ]
