"""Runners have a name (``pynenc_runner --name``), stored with their heartbeats and their
workers', and with their runner contexts, which outlive a clean stop; a database default
as well, so rows written without it stay valid."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('pynenc_django', '0005_broker_order_keeps_rerouted_places'),
    ]

    operations = [
        migrations.AddField(
            model_name='runnerheartbeat',
            name='name',
            field=models.CharField(blank=True, db_default='', default='', max_length=100),
        ),
        migrations.AddField(
            model_name='runnercontextrecord',
            name='name',
            field=models.CharField(blank=True, db_default='', default='', max_length=100),
        ),
    ]
