"""Server settings of IMAP/SMTP accounts. Secrets stay encrypted on the Account."""

from django.db import models

from messages.models import Account


class Security(models.TextChoices):
    SSL = "ssl", "SSL/TLS"
    STARTTLS = "starttls", "STARTTLS"
    NONE = "none", "None (allow-listed servers only)"


class ImapSettings(models.Model):
    account = models.OneToOneField(
        Account, on_delete=models.CASCADE, primary_key=True, related_name="imap_settings"
    )
    imap_host = models.CharField(max_length=255)
    imap_port = models.PositiveIntegerField(default=993)
    imap_security = models.CharField(max_length=8, choices=Security.choices, default=Security.SSL)
    username = models.CharField(max_length=320)
    smtp_host = models.CharField(max_length=255, blank=True)
    smtp_port = models.PositiveIntegerField(default=465)
    smtp_security = models.CharField(max_length=8, choices=Security.choices, default=Security.SSL)
    smtp_username = models.CharField(max_length=320, blank=True, help_text="Blank: the IMAP one.")
    smtp_trust_self_signed = models.BooleanField(
        "trust the SMTP server's certificate without verifying it",
        default=False,
        help_text=(
            "For a server with a self-signed certificate: TLS still encrypts, but the server's "
            "identity is not checked. Off: the certificate must verify against the system's "
            "certificate authorities."
        ),
    )
    capabilities = models.JSONField(default=list, blank=True, editable=False)
    allow_internal = models.BooleanField(
        "may reach internal addresses",
        default=False,
        editable=False,
        help_text=(
            "Set when the hosts were typed by staff (OUTBOUND_STAFF_ALLOW_INTERNAL): every "
            "connection of this account may go to loopback/private addresses. Otherwise only "
            "public addresses and the operator's OUTBOUND_ALLOWED_NETWORKS."
        ),
    )

    class Meta:
        verbose_name = "IMAP/SMTP settings"
        verbose_name_plural = "IMAP/SMTP settings"

    def __str__(self) -> str:
        return f"{self.username}@{self.imap_host}:{self.imap_port}"

    @property
    def supports_idle(self) -> bool:
        return "IDLE" in self.capabilities
