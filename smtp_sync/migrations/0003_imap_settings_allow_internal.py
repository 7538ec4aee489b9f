from django.db import migrations, models


def staff_owned_accounts_keep_internal_hosts(apps, schema_editor):
    """Accounts from before the guard: those of staff owners keep reaching internal hosts (the
    rule a staff user gets now); the others get the default rule (public addresses and the
    allow list only)."""
    ImapSettings = apps.get_model("smtp_sync", "ImapSettings")
    ImapSettings.objects.filter(account__owner__is_staff=True).update(allow_internal=True)


class Migration(migrations.Migration):
    dependencies = [
        ("smtp_sync", "0002_seed_poll_job"),
    ]

    operations = [
        migrations.AddField(
            model_name="imapsettings",
            name="allow_internal",
            field=models.BooleanField(
                default=False,
                editable=False,
                help_text="Set when the hosts were typed by staff (OUTBOUND_STAFF_ALLOW_INTERNAL): every connection of this account may go to loopback/private addresses. Otherwise only public addresses and the operator's OUTBOUND_ALLOWED_NETWORKS.",
                verbose_name="may reach internal addresses",
            ),
        ),
        migrations.AlterField(
            model_name="imapsettings",
            name="imap_security",
            field=models.CharField(
                choices=[
                    ("ssl", "SSL/TLS"),
                    ("starttls", "STARTTLS"),
                    ("none", "None (allow-listed servers only)"),
                ],
                default="ssl",
                max_length=8,
            ),
        ),
        migrations.AlterField(
            model_name="imapsettings",
            name="smtp_security",
            field=models.CharField(
                choices=[
                    ("ssl", "SSL/TLS"),
                    ("starttls", "STARTTLS"),
                    ("none", "None (allow-listed servers only)"),
                ],
                default="ssl",
                max_length=8,
            ),
        ),
        migrations.RunPython(staff_owned_accounts_keep_internal_hosts, migrations.RunPython.noop),
    ]
