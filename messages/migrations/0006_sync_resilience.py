"""Sync resilience: re-tests of parked accounts (with backoff), and interrupted sync runs."""

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone


def retest_parked_accounts_soon(apps, schema_editor):
    """Accounts parked before re-tests existed are tried again at the watchdog's next tick."""
    Account = apps.get_model("mailstore", "Account")
    Account.objects.filter(status="auth_error").update(auth_retest_at=timezone.now())


class Migration(migrations.Migration):
    dependencies = [
        ("mailstore", "0005_raw_message_files"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="account",
            name="auth_failures",
            field=models.PositiveIntegerField(
                default=0, help_text="Logins refused in a row (resets when one succeeds)."
            ),
        ),
        migrations.AddField(
            model_name="account",
            name="auth_retest_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When the login of a parked (auth_error) account is tried again.",
                null=True,
            ),
        ),
        migrations.AlterField(
            model_name="syncrun",
            name="status",
            field=models.CharField(
                choices=[
                    ("running", "Running"),
                    ("succeeded", "Succeeded"),
                    ("failed", "Failed"),
                    ("interrupted", "Interrupted"),
                ],
                default="running",
                max_length=16,
            ),
        ),
        migrations.AddIndex(
            model_name="account",
            index=models.Index(
                condition=models.Q(("status", "auth_error")),
                fields=["auth_retest_at"],
                name="account_auth_retest_due",
            ),
        ),
        migrations.AddIndex(
            model_name="syncrun",
            index=models.Index(
                condition=models.Q(("status", "running")),
                fields=["started_at"],
                name="syncrun_running",
            ),
        ),
        migrations.RunPython(retest_parked_accounts_soon, migrations.RunPython.noop),
    ]
