"""The admin in a real headless Chromium: log in, open an account, "sync now", open a message.

Screenshots land in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from messages.models import Message
from smtp_sync.sync import ImapAccountSync
from tests.mailfactory import make_mail

pytestmark = pytest.mark.django_db(transaction=True)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
HOSTILE_HTML = (
    "<p>Quarterly numbers inside.</p>"
    '<img src="x" onerror="document.title=\'pwned\'">'
    "<script>document.title='pwned'</script>"
    "<a href=\"javascript:document.title='pwned'\">open</a>"
)


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(chromium).exists() or not Path(driver_path).exists():
        pytest.fail("Debian's chromium and chromium-driver are missing: run scripts/bootstrap.sh")
    options = Options()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def wait_for_text(driver, text: str, timeout: float = 15) -> None:
    """A click starts a navigation and returns: wait until the new page shows the text."""
    WebDriverWait(driver, timeout).until(
        expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "body"), text)
    )


def shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_operator_logs_in_syncs_and_reads_mail(
    browser, live_server, django_user_model, imap_account, imap_user
):
    django_user_model.objects.create_superuser("operator", "op@example.com", "op-pass-12345")
    raw = make_mail("Quarterly report", message_id="<qr@x>", html=HOSTILE_HTML)
    imap_user.append("INBOX", raw)
    ImapAccountSync(imap_account).sync()
    message = Message.objects.get(account=imap_account, subject="Quarterly report")

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("op-pass-12345")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for_text(browser, "Site administration")
    shot(browser, "01-admin-home")

    browser.get(f"{live_server.url}/admin/mailstore/account/")
    assert imap_account.email_address in browser.page_source
    browser.find_element(By.LINK_TEXT, imap_account.email_address).click()
    wait_for_text(browser, "Last error")
    assert imap_user.password not in browser.page_source
    shot(browser, "02-account")

    browser.get(f"{live_server.url}/admin/mailstore/account/")
    browser.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("sync_now")
    browser.find_element(By.NAME, "index").click()
    wait_for_text(browser, "Full sync requested for 1 account(s).")
    shot(browser, "03-sync-now")

    browser.get(f"{live_server.url}/admin/mailstore/message/{message.pk}/change/")
    wait_for_text(browser, "Quarterly numbers inside.")
    assert browser.title != "pwned", "a script from the mail ran in the admin"
    raw_link = browser.find_element(By.LINK_TEXT, "Download .eml")
    assert raw_link.get_attribute("href").endswith(f"/admin/mailstore/message/{message.pk}/raw/")
    shot(browser, "04-message")
