"""The web UI in a real headless Chromium, against a real server and real training runs
(tiny models, each run its own ``tunesmith`` process): fill the New-run form and watch the
run complete with its loss chart; a bad value shows the CLI's message inline; two runs
compare; the playground streams an answer equal to the non-streamed one; review votes
give the win rate the clicks mean.

Screenshots of every page land in ``test-artifacts/ui/`` (set TUNESMITH_UI_SCREENSHOTS to
write them elsewhere, e.g. docs/ for the README).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tunesmith.config.load import validate_recipe
from tunesmith.errors import ConfigError
from tunesmith.eval.review_import import import_reviews
from tunesmith.testing import wait_until, write_chat_recipe, write_cls_recipe

from tests.browser import needs_chromium, open_chromium

pytestmark = needs_chromium
TOKEN = "test-token"
REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("TUNESMITH_UI_SCREENSHOTS") or REPO / "test-artifacts" / "ui")


@pytest.fixture(scope="module")
def ui(tmp_path_factory, tiny_bert_dir, tiny_llama_dir):
    """A UI on a fresh workspace holding the tiny models and the tiny recipes' data."""
    from tunesmith.ui.app import create_app, serve_in_thread

    ws = tmp_path_factory.mktemp("workspace")
    shutil.copytree(tiny_bert_dir, ws / "models" / "tiny-bert")
    shutil.copytree(tiny_llama_dir, ws / "models" / "tiny-llama")
    write_cls_recipe(ws, ws / "models" / "tiny-bert")
    write_chat_recipe(ws, ws / "models" / "tiny-llama")
    app, ctx = create_app(ws, token=TOKEN, job_limit=2)
    ctx.jobs.start()
    server, url = serve_in_thread(app)
    client = httpx.Client(base_url=url, headers={"X-Tunesmith-Token": TOKEN}, timeout=60)
    yield {"url": url, "ws": ws, "ctx": ctx, "client": client}
    server.should_exit = True
    ctx.jobs.close()
    ctx.playground.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = open_chromium(tmp_path_factory.mktemp("profile"), tmp_path_factory.mktemp("downloads"))
    yield driver
    driver.quit()


def _wait(predicate, timeout: float = 90, what: str = "condition"):
    return wait_until(predicate, timeout, what, poll=0.2)


def _open(browser, url: str, page: str) -> None:
    browser.get(url)
    _wait(lambda: browser.execute_script("return document.body.dataset.page") == page, 20, f"page {page}")


def _shot(browser, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"ui-{name}.png"))


def _field(browser, key: str):
    return browser.find_element("css selector", f'[data-key="{key}"]')


def _type(browser, key: str, text: str) -> None:
    control = _field(browser, key)
    browser.execute_script("arguments[0].closest('details') && (arguments[0].closest('details').open = true)", control)
    control.clear()
    control.send_keys(text)


def _select(browser, key: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(_field(browser, key)).select_by_value(value)


def _start_by_api(ui, recipe_file: str, **changes) -> str:
    """Queue a run of a tiny recipe through the same endpoint the form uses."""
    from tunesmith.ui.forms import recipe_to_values

    raw = yaml.safe_load((ui["ws"] / recipe_file).read_text())
    raw.pop("output_dir")
    values = recipe_to_values(raw)
    values.update(changes)
    response = ui["client"].post("/api/runs", json={"values": values})
    assert response.status_code == 201, response.text
    return response.json()["name"]


def _wait_done(ui, name: str, timeout: float = 180) -> dict:
    def done():
        row = next((r for r in ui["client"].get("/api/runs").json()["runs"] if r["name"] == name), None)
        return row if row and row["status"] not in ("queued", "running") else None
    return _wait(done, timeout, f"run {name}")


def test_fill_the_form_start_a_run_and_watch_its_loss_chart(ui, browser):
    _open(browser, ui["url"] + "/#/new", "new")
    _type(browser, "name", "form-run")
    _select(browser, "task", "classification")
    _type(browser, "model.name", "models/tiny-bert")
    _type(browser, "data.train.0.path", "train.jsonl")
    _type(browser, "data.max_length", "32")
    _select(browser, "method.type", "full")
    _type(browser, "train.epochs", "4")
    _type(browser, "train.lr", "5e-3")
    _type(browser, "train.log_every", "2")
    _type(browser, "train.eval_every", "10")
    preview = browser.find_element("id", "yaml-preview")
    _wait(lambda: "form-run" in preview.text and "log_every: 2" in preview.text, 10, "the YAML preview")
    assert browser.find_element("id", "form-errors").get_attribute("data-count") == "0"
    browser.find_element("id", "plan-run").click()  # the plan panel: `tunesmith plan` of this form
    plan = browser.find_element("id", "plan-box")
    _wait(lambda: plan.get_attribute("data-fits") == "true", 60, "the plan")
    assert "plan for form-run: method full" in plan.text and "fits" in plan.text
    browser.execute_script("window.scrollTo(0, 0)")
    _shot(browser, "new-run")
    browser.find_element("id", "start-run").click()
    _wait(lambda: browser.execute_script("return location.hash") == "#/run/form-run", 20, "the run page")
    _wait(lambda: browser.find_element("css selector", "[data-status]").get_attribute("data-status") == "completed",
          180, "the run to complete")
    loss = browser.find_element("css selector", '[data-chart="loss"] polyline.series')
    points = int(loss.get_attribute("data-count"))
    metrics = [json.loads(line) for line in (ui["ws"] / "runs" / "form-run" / "metrics.jsonl").read_text().splitlines()]
    assert points == len(metrics) >= 10  # every logged step drawn (160 rows x 0.9 / 16 x 4 epochs / 2)
    evaluation = browser.find_element("css selector", '[data-chart="evaluation"]')
    assert int(evaluation.get_attribute("data-points")) > 0
    assert browser.find_element("id", "metrics-table").text.count("accuracy") == 1
    _shot(browser, "run")
    # The run directory is an ordinary one: its recipe reloads with the CLI's loader.
    config = yaml.safe_load((ui["ws"] / "runs" / "form-run" / "config.yaml").read_text())
    assert config["train"]["log_every"] == 2 and config["method"]["type"] == "full"


def test_a_bad_value_shows_the_cli_message_inline(ui, browser):
    _open(browser, ui["url"] + "/#/new", "new")
    _type(browser, "name", "bad-run")
    _type(browser, "train.lr", "-1")
    _type(browser, "method.r", "0")
    slot = browser.find_element("css selector", '[data-error-for="train.lr"]')
    _wait(lambda: slot.text, 10, "the inline error")
    with pytest.raises(ConfigError) as cli:
        validate_recipe({"name": "bad-run", "task": "classification", "model": {"name": "m"},
                         "data": {"train": "x.jsonl"}, "train": {"lr": -1}, "method": {"type": "lora", "r": 0}})
    assert slot.text in str(cli.value) and "greater than 0" in slot.text
    r_slot = browser.find_element("css selector", '[data-error-for="method.r"]')
    assert r_slot.text in str(cli.value) and "greater than or equal to 1" in r_slot.text
    assert "invalid" in slot.find_element("xpath", "..").get_attribute("class")
    _shot(browser, "inline-error")
    browser.find_element("id", "start-run").click()  # refused: the run list gains nothing
    time.sleep(1)
    assert "bad-run" not in [r["name"] for r in ui["client"].get("/api/runs").json()["runs"]]


def test_compare_two_runs(ui, browser):
    first = _start_by_api(ui, "recipe.yaml", name="cmp-a", **{"train.epochs": "2"})
    second = _start_by_api(ui, "recipe.yaml", name="cmp-b", **{"train.epochs": "2", "train.lr": "1e-3"})
    for name in (first, second):
        assert _wait_done(ui, name)["status"] == "completed"
    _open(browser, ui["url"] + "/#/runs", "runs")
    for name in (first, second):
        browser.find_element("css selector", f'tr[data-run="{name}"] input').click()
    browser.find_element("id", "compare-selected").click()
    _wait(lambda: browser.find_elements("css selector", "#compare-table tr[data-run]"), 20, "the compare table")
    rows = browser.find_elements("css selector", "#compare-table tr[data-run]")
    assert sorted(r.get_attribute("data-run") for r in rows) == [first, second]
    lines = browser.find_elements("css selector", '[data-chart="train loss"] polyline.series')
    assert sorted(line.get_attribute("data-name") for line in lines) == [first, second]
    for line in lines:
        name = line.get_attribute("data-name")
        logged = len((ui["ws"] / "runs" / name / "metrics.jsonl").read_text().splitlines())
        assert int(line.get_attribute("data-count")) == logged > 2
    _shot(browser, "compare")


def test_playground_streams_an_answer(ui, browser):
    name = _start_by_api(ui, "chat.yaml", name="chat-run")
    assert _wait_done(ui, name, 240)["status"] == "completed"
    _open(browser, ui["url"] + "/#/play", "play")
    boxes = browser.find_elements("css selector", "#play-models input")
    labels = [b.find_element("xpath", "..").text.strip() for b in boxes]
    assert labels[:2] == ["chat-run (lora)", "base of chat-run"]
    assert [b.is_selected() for b in boxes[:2]] == [True, True]
    browser.find_element("id", "play-max-tokens").clear()
    browser.find_element("id", "play-max-tokens").send_keys("8")
    browser.find_element("id", "play-message").send_keys("who are you?")
    browser.find_element("id", "play-send").click()
    answers = _wait(lambda: [a for a in browser.find_elements("css selector", "[data-answer]")
                             if a.get_attribute("data-streaming") == "false"] if len(
        [a for a in browser.find_elements("css selector", "[data-answer]") if a.get_attribute("data-streaming") == "false"]) == 2
        else None, 120, "both answers")
    texts = {a.find_element("xpath", "..").get_attribute("data-label"): a.text for a in answers}
    assert all(int(a.get_attribute("data-chunks") or 0) > 1 for a in answers)  # streamed in pieces
    # The streamed text is the model's greedy answer: the same request without streaming.
    for label, model in (("chat-run (lora)", "chat-run"), ("base of chat-run", "tiny-llama")):
        whole = ui["client"].post("/serve/v1/chat/completions", headers={"Authorization": f"Bearer {TOKEN}"}, json={
            "model": model, "messages": [{"role": "user", "content": "who are you?"}], "max_tokens": 8,
            "temperature": 0}).json()
        assert whole["choices"][0]["message"]["content"].strip() == texts[label].strip()
    _shot(browser, "playground")


def test_review_votes_give_the_win_rate_of_the_clicks(ui, browser):
    assert _wait_done(ui, "chat-run", 240)["status"] == "completed"
    _open(browser, ui["url"] + "/#/review", "review")
    browser.find_element("id", "review-create").click()
    _wait(lambda: browser.find_elements("id", "review-item"), 20, "the review page")
    review_id = browser.execute_script("return decodeURIComponent(location.hash.split('/')[2])")
    folder = ui["ws"] / "reviews" / review_id
    key = json.loads((folder / "key.json").read_text())
    items = json.loads((folder / "labelstudio.json").read_text())
    browser.find_element("id", "reviewer").send_keys("ada")
    expected_b = 0
    for index, task in enumerate(items):
        side_of_b = "1" if key["items"][task["data"]["item_id"]]["1"] == "B" else "2"
        side_of_a = "2" if side_of_b == "1" else "1"
        pick = side_of_b if index % 3 else side_of_a  # the run wins 2 of every 3 items
        expected_b += pick == side_of_b
        button = _wait(lambda: browser.find_element("css selector", f'[data-choice="{pick}"]'), 10, "vote buttons")
        shown = browser.find_element("id", "review-item").text
        assert f"item {index + 1} of {len(items)}" in shown
        button.click()
        _wait(lambda: f"item {index + 2} of" in browser.find_element("id", "review-item").text
              or browser.find_elements("id", "review-done"), 10, "the next item")
    expected = expected_b / len(items)
    results = _wait(lambda: browser.find_element("id", "review-results").get_attribute("data-win-rate"), 10, "results")
    assert float(results) == pytest.approx(expected)
    votes = list(folder.glob("review-*-ada.json"))
    assert import_reviews(votes, folder / "key.json")["win_rate"]["value"] == pytest.approx(expected)
    _shot(browser, "review")
