"""Revoke requests the runners carry out (``pynenc_django.revoke``): running invocations
to terminate, and invocations to cancel once back in their queue."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('pynenc_django', '0008_delayed_messages_and_call_options'),
    ]

    operations = [
        migrations.CreateModel(
            name='RevokeRequest',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('app_id', models.CharField(max_length=255)),
                ('invocation_id', models.CharField(max_length=255)),
                ('reason', models.TextField(blank=True, default='')),
                ('requested_by', models.CharField(max_length=255)),
                ('requested_at', models.DateTimeField()),
                ('terminate', models.BooleanField(default=False)),
            ],
            options={
                'db_table': 'pynenc_revoke_request',
                'constraints': [models.UniqueConstraint(fields=('app_id', 'invocation_id'), name='pynenc_revoke_request_uniq')],
            },
        ),
    ]
