"""Runners have a name (``pynenc_runner --name``), stored with their heartbeats and their
workers'; a database default as well, so rows written without it stay valid."""

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
    ]
