from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("mailstore", "0005_raw_message_files"),
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
