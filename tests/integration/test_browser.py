"""The web page in a real headless Chromium (Debian's package, driven by Playwright) against
the running platform: sign in with the keyboard, upload, watch the task finish, see the
boxes, delete. Saves a screenshot (var/screenshots/page.png)."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from PIL import Image

from config.settings import REPO_ROOT
from training.render import render_jpeg

SCREENSHOTS = REPO_ROOT / "var" / "screenshots"


def _chromium() -> str:
    path = os.environ.get("PRIMITIVES_CHROMIUM") or shutil.which("chromium")
    assert path, "chromium is not installed: `make test` installs it (scripts/ensure-test-tools.sh)"
    return path


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=_chromium(),
            headless=True,
            args=["--no-sandbox"] if os.geteuid() == 0 else [],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context.new_page()
        browser.close()


def test_a_person_signs_in_uploads_sees_the_boxes_and_deletes(
    page, platform, account, tmp_path, http
):
    from playwright.sync_api import expect

    images = []
    for seed in (41, 42):
        images.append(tmp_path / f"scene-{seed}.jpg")
        images[-1].write_bytes(render_jpeg(seed)[0])

    page.goto(platform.url + "/")
    # Keyboard only: the focus starts in the user name field.
    page.keyboard.type(account[0])
    page.keyboard.press("Tab")
    page.keyboard.type(account[1])
    page.keyboard.press("Enter")
    expect(page.locator("#whoami")).to_have_text(account[0])
    expect(page.get_by_label("Detection model")).to_contain_text("YOLO")

    listings: list[str] = []  # GET /api/tasks?...: the list, read
    page.on(
        "request",
        lambda r: (
            listings.append(r.url)
            if r.method == "GET" and re.search(r"/api/tasks(\?|$)", r.url)
            else None
        ),
    )
    page.set_input_files("#files", [str(p) for p in images])
    expect(page.locator("#submit-message")).to_have_text("Submitted 2 images.")
    rows = page.locator("#tasks tbody tr")
    expect(rows).to_have_count(2)
    # Live: the statuses turn to done with no reload, told by the event stream (opened at
    # sign-in), not by reading the list again: one listing, after the upload.
    expect(page.locator("#tasks tbody .status-done")).to_have_count(2, timeout=120_000)
    assert len(listings) == 1, listings
    first_id = rows.first.get_attribute("data-id")

    page.get_by_role("button", name=f"View task {first_id}").click()
    expect(page.locator("#detail-title")).to_have_text(f"Task {first_id}: done")
    expect(page.locator("#primitives tbody tr").first).to_be_visible()
    expect(page.locator("#scene")).not_to_have_text("—")
    # The drawn result, fetched with the token, shown at the input's size.
    expect(page.locator("#picture")).to_have_attribute("src", re.compile("^blob:"))
    page.wait_for_function("document.getElementById('picture').naturalWidth > 0")
    shown = page.evaluate(
        "[document.getElementById('picture').naturalWidth, "
        "document.getElementById('picture').naturalHeight]"
    )
    assert tuple(shown) == Image.open(images[0]).size
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "page.png"), full_page=True)

    page.get_by_role("button", name=f"Delete task {first_id}").click()
    expect(page.locator("#submit-message")).to_have_text(f"Task {first_id} deleted.")
    expect(rows).to_have_count(1)
    expect(page.locator("#detail")).to_be_hidden()
    token = page.evaluate("sessionStorage.getItem('token')")
    gone = http.get(f"/api/tasks/{first_id}/status", headers={"Authorization": f"Bearer {token}"})
    assert gone.status_code == 404

    # One image: the upload itself waits for the result (Prefer: wait) and shows it.
    with page.expect_response(
        lambda r: r.url.startswith(platform.url + "/api/tasks?") and r.request.method == "POST"
    ) as posted:
        page.set_input_files("#files", [str(images[1])])
    assert posted.value.headers.get("preference-applied") == "wait=30"
    expect(page.locator("#submit-message")).to_have_text("Submitted 1 image.")
    # Shown done at once, with no click: the answer to the upload was the result.
    expect(page.locator("#detail")).to_be_visible()
    expect(rows).to_have_count(2)  # the page had room: the new task joins it
    new_id = rows.last.get_attribute("data-id")
    assert int(new_id or 0) > int(first_id or 0)
    expect(page.locator("#prev-page")).to_be_disabled()  # still the first page
    expect(page.locator("#detail-title")).to_have_text(f"Task {new_id}: done")
    assert page.evaluate("document.cookie") == ""


def test_signed_out_nothing_says_signed_in_and_sign_out_ends_the_token(
    page, platform, account, http
):
    """Review of the page in Chromium: signed out, the header still said "Signed in as" with
    a Sign out button; the first page's "Previous page" looked enabled; the favicon was a 404
    in the console; Sign out forgot the token in the page without ending it on the server."""
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    refused: list[str] = []
    page.on(
        "response", lambda r: refused.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    page.evaluate("sessionStorage.clear()")
    page.goto(platform.url + "/")
    expect(page.locator("#session")).to_be_hidden()
    expect(page.get_by_text("Signed in as")).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()

    page.fill("#username", account[0])
    page.fill("#password", account[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#whoami")).to_have_text(account[0])
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.locator("#prev-page")).to_be_disabled()  # no tasks: the first page
    expect(page.locator("#next-page")).to_be_disabled()
    token = page.evaluate("sessionStorage.getItem('token')")
    assert http.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    with page.expect_response(lambda r: r.url.endswith("/oauth/logout")) as logout:
        page.get_by_role("button", name="Sign out").click()
    assert logout.value.status == 204
    expect(page.locator("#session")).to_be_hidden()
    expect(page.locator("#login-section")).to_be_visible()
    assert http.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert refused == [] and errors == [], (refused, errors)


def test_a_person_makes_a_key_sees_it_once_and_revokes_it(page, platform, account, http):
    """The page's API keys (docs/api.md §E12): made, shown once, listed, revoked at once."""
    from playwright.sync_api import expect

    page.goto(platform.url + "/")
    page.evaluate("sessionStorage.clear()")  # signed out, whatever ran before
    page.reload()
    page.fill("#username", account[0])
    page.fill("#password", account[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#whoami")).to_have_text(account[0])
    page.get_by_label("Key name", exact=True).fill("browser batch")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key-box")).to_be_visible()
    key = page.locator("#new-key").inner_text()
    assert re.fullmatch(r"prim_[A-Za-z0-9_-]{43}", key), key
    row = page.locator("#keys tbody tr", has_text="browser batch")
    expect(row).to_have_count(1)
    expect(row).not_to_contain_text(key)  # the list never shows a secret
    assert http.get("/api/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    row.get_by_role("button", name="Revoke key browser batch").click()
    expect(page.locator("#key-message")).to_have_text("Key browser batch revoked.")
    expect(page.locator("#keys tbody tr", has_text="browser batch")).to_have_count(0)
    assert http.get("/api/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#new-key")).to_have_text("")
