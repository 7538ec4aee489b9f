from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("mailstore", "0007_seed_sweeper"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="message",
            options={
                "permissions": [
                    (
                        "read_mail_content",
                        "Can read mail content (bodies, raw sources, attachments)",
                    )
                ]
            },
        ),
    ]
