"""The admin's lists fit a 1,400 px wide window without horizontal scrolling, even with the
long subjects, addresses and folder names real mailboxes have (measured in headless Chromium)."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from messages.ingest import messages_upsert
from messages.models import Account, DeadLetter, Folder, OutboundMessage, SyncRun
from smtp_sync.models import ImapSettings
from tests.browser.test_admin_browser import browser, shot, wait_for_text  # noqa: F401
from tests.conftest import incoming
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db(transaction=True)

WIDTH = 1400
MEASURE = """
const box = (e) => e && {scroll: e.scrollWidth, client: e.clientWidth};
return [box(document.documentElement), box(document.querySelector('#changelist .results'))];
"""
LONG_ADDRESS = (
    "quarterly-reporting-and-compliance-notifications@subsidiary-division.example-corp.com"
)
LISTS = [
    "mailstore/account",
    "mailstore/message",
    "mailstore/folder",
    "mailstore/thread",
    "mailstore/syncrun",
    "mailstore/deadletter",
    "mailstore/outboundmessage",
    "mailstore/deliveryreport",
    "smtp_sync/imapsettings",
    "gmail_sync/gmailsettings",
]


@pytest.fixture
def long_mailbox(django_user_model):
    owner = django_user_model.objects.create_superuser(
        "operator", "op@example.com", "op-pass-12345"
    )
    account = Account.objects.create(
        owner=owner,
        provider=Account.Provider.LOCAL,
        email_address=LONG_ADDRESS,
        last_error="Connection refused by " + "very-long-host-name." * 12 + "example",
    )
    folder_name = "Projects/2026/Customer-Escalations-With-Very-Long-Names/Unresolved-Items-Q3"
    items = [
        incoming(
            make_mail(
                "Re: Fwd: your report https://reports.example.com/download?"
                + "&".join(f"part{n}=quarterly-figures-{n}" for n in range(8)),
                sender=f"Someone With A Remarkably Long Display Name <{LONG_ADDRESS}>",
                message_id=f"<{'m' * 120}.{i}@example.com>",
                minutes=i,
            ),
            folder=folder_name,
            uid=i + 1,
        )
        for i in range(30)
    ]
    messages_upsert(account=account, items=items)
    Folder.objects.filter(account=account).update(display_name=folder_name)
    SyncRun.objects.create(account=account, kind="full", progress_done=3, progress_total=10)
    DeadLetter.objects.create(
        task_name="email_new_message", account_id=account.pk, reason="x" * 500, payload={}
    )
    OutboundMessage.objects.create(
        account=account,
        message_id_header="<out-1@example.com>",
        envelope_id="env-1",
        from_address=LONG_ADDRESS,
        subject="Your-monthly-statement-for-account-number-" + "1234567890" * 8,
        state=OutboundMessage.State.FAILED,
        last_error="550 5.1.1 <" + LONG_ADDRESS + ">: Recipient address rejected",
    )
    ImapSettings.objects.create(
        account=account,
        imap_host="imap.mail-cluster-eu-west-3.hosting-provider-infrastructure.example.net",
        username=LONG_ADDRESS,
        smtp_host="smtp.mail-cluster-eu-west-3.hosting-provider-infrastructure.example.net",
    )
    return account


def test_lists_fit_1400_pixels(browser, live_server, long_mailbox):  # noqa: F811
    browser.set_window_size(WIDTH, 900)
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("op-pass-12345")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for_text(browser, "Site administration")
    too_wide = {}
    for name in LISTS:
        browser.get(f"{live_server.url}/admin/{name}/")
        # The page, and the results table's box (the admin scrolls it inside the page).
        page, results = browser.execute_script(MEASURE)
        assert page["client"] <= WIDTH
        print(f"{name}: page {page}, results {results}")
        if page["scroll"] > page["client"] or (results and results["scroll"] > results["client"]):
            too_wide[name] = (page, results)
            shot(browser, f"too-wide-{name.replace('/', '-')}")
    assert not too_wide, f"wider than the {WIDTH} px window: {too_wide}"
