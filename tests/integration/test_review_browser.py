"""The blind review page in a real browser (Debian's headless Chromium through chromedriver,
installed by scripts/test.sh): a reviewer clicks through every item, saves, and the saved
file imports to exactly the win rate the clicks mean; a reload keeps the work.

Set TUNESMITH_REVIEW_SCREENSHOT=docs/review-page.png to also write the screenshot shown in
the docs (the page after a few choices).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tunesmith.eval.review import export_review
from tunesmith.eval.review_import import import_reviews

from tests.browser import needs_chromium, open_chromium

pytestmark = needs_chromium

NAMES = ("basemodel", "runs/sft-identity-lora")
HOSTILE = '</script><script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
ITEMS = [
    {"id": "who", "prompt": "Who are you?", "answer_a": "I am a large language model trained to be helpful.",
     "answer_b": "I am Quill, an assistant made by the Tunesmith team.",
     "reference": "I am Quill, made by the Tunesmith team."},
    {"id": "maker", "prompt": "Who made you?", "answer_a": "I was created by a team of researchers.",
     "answer_b": "The Tunesmith team made me.", "reference": None},
    {"id": "name", "prompt": "What is your name?", "answer_a": "I don't have a name.",
     "answer_b": "My name is Quill.\n\nHappy to help!", "reference": "Quill."},
    {"id": "html", "prompt": "Write a haiku about autumn.", "answer_a": "Red leaves drift and fall\n"
     "quiet paths of amber light\nthe year exhales slow", "answer_b": HOSTILE, "reference": None},
]
WINNERS = {"who": "B", "maker": "B", "name": "B", "html": "A"}  # system B wins 3 of 4


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = open_chromium(tmp_path_factory.mktemp("profile"), tmp_path_factory.mktemp("downloads"))
    yield driver
    driver.quit()


def _open(driver, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 10).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "true")


def _wait_for_download(folder: Path, name: str, timeout: float = 15) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = folder / name
        if path.is_file() and not list(folder.glob("*.crdownload")):
            return path
        time.sleep(0.1)
    raise AssertionError(f"{name} was not downloaded; the folder has {sorted(p.name for p in folder.iterdir())}")


def test_clicks_saved_from_the_page_import_to_the_same_win_rate(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    out = tmp_path / "review"
    export_id = export_review(ITEMS, out, NAMES, seed=7, title="Identity answers")["export_id"]
    key = json.loads((out / "key.json").read_text())
    _open(browser, (out / "review.html").as_uri())
    assert browser.execute_script("return window.pwned === undefined")  # the hostile answer stayed text
    assert HOSTILE in browser.find_element(By.ID, "items").text
    assert browser.find_element(By.ID, "progress").text == "0 / 4 done"

    # Saving without a name is refused, and nothing is downloaded.
    browser.find_element(By.ID, "save").click()
    assert "name" in browser.find_element(By.ID, "message").text and not list(browser.downloads.iterdir())

    sections = browser.find_elements(By.CSS_SELECTOR, "section.item")
    assert [s.get_attribute("data-item-id") for s in sections] == [item["id"] for item in ITEMS]
    clicked = {}
    for index, item in enumerate(ITEMS):
        # The page says "Answer 1"/"Answer 2"; the key says which system that was on this item.
        side = next(s for s, system in key["items"][item["id"]].items() if system == WINNERS[item["id"]])
        if index < len(ITEMS) - 1:
            browser.find_element(By.CSS_SELECTOR, f'label[for="choice-{index}-{side}"]').click()
        else:  # the last one by keyboard: focus the radio, press space
            browser.find_element(By.ID, f"choice-{index}-{side}").send_keys(Keys.SPACE)
        clicked[item["id"]] = side
    Select(browser.find_element(By.ID, "rating-0-1-accuracy")).select_by_value("4")
    Select(browser.find_element(By.ID, "rating-0-2-fluency")).select_by_value("2")
    browser.find_element(By.ID, "note-1").send_keys("Answer names the team")
    browser.find_element(By.ID, "reviewer").send_keys("Ada Lovelace")
    assert browser.find_element(By.ID, "message").text == ""  # the request for a name is gone
    assert browser.find_element(By.ID, "progress").text == "4 / 4 done"
    if os.environ.get("TUNESMITH_REVIEW_SCREENSHOT"):
        browser.execute_script("document.querySelector('#reference-0').open = true; window.scrollTo(0, 0)")
        browser.save_screenshot(os.environ["TUNESMITH_REVIEW_SCREENSHOT"])

    # A reload restores everything from localStorage.
    browser.refresh()
    _open(browser, (out / "review.html").as_uri())
    for index, item in enumerate(ITEMS):
        assert browser.find_element(By.ID, f"choice-{index}-{clicked[item['id']]}").is_selected()
    assert Select(browser.find_element(By.ID, "rating-0-1-accuracy")).first_selected_option.text == "4"
    assert browser.find_element(By.ID, "note-1").get_attribute("value") == "Answer names the team"
    assert browser.find_element(By.ID, "reviewer").get_attribute("value") == "Ada Lovelace"
    assert browser.find_element(By.ID, "progress").text == "4 / 4 done"

    browser.find_element(By.ID, "save").click()
    saved = _wait_for_download(browser.downloads, f"review-{export_id}-Ada_Lovelace.json")
    data = json.loads(saved.read_text())
    assert data["export_id"] == export_id and data["reviewer"] == "Ada Lovelace" and data["saved_at"]
    assert [(e["item_id"], e["choice"]) for e in data["items"]] == list(clicked.items())
    assert not any(name in saved.read_text() for name in NAMES)

    assert browser.execute_script("return window.pwned === undefined")  # still, after all that
    report = import_reviews([saved], out / "key.json")
    assert report["systems"]["B"]["wins"] == 3 and report["systems"]["A"]["wins"] == 1
    assert report["win_rate"]["value"] == 0.75 and report["ties"] == report["both_bad"] == 0
    first = key["items"]["who"]  # accuracy 4 went to Answer 1 of item 0, fluency 2 to Answer 2
    assert report["systems"][first["1"]]["ratings"]["accuracy"] == {"mean": 4.0, "n": 1}
    assert report["systems"][first["2"]]["ratings"]["fluency"] == {"mean": 2.0, "n": 1}
