"""Two indexes the admin overview and ``pynenc_status`` need at millions of rows: the
oldest blocking edges first (the stuck-wait check), and a queued invocation's message
(its queue, in that check; the admin's search of broker messages). Without them both read
the whole table: at ten million invocations, a million edges and 800,000 messages."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('pynenc_django', '0009_revoke_requests'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='blockingedge',
            index=models.Index(fields=['app_id', 'created_at', 'id'], name='pynenc_blocking_age_idx'),
        ),
        migrations.AddIndex(
            model_name='brokermessage',
            index=models.Index(fields=['app_id', 'invocation_id'], name='pynenc_broker_inv_idx'),
        ),
    ]
