"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver) driven
by Selenium, against a live `transferlab serve` with its worker on the tiny data, with an API token.

One server and one browser for the module; the tests run in order, as a person would: log in, get a
422 beside a bad field, start a smoke-size experiment from its form and watch it reach its comparison,
open the comparison, watch a job's curves gain points while it trains, predict by upload and by
drawing. About a minute on 2 cores.

    TRANSFERLAB_UI_SCREENSHOTS=docs/ui .venv/bin/python -m pytest tests/ui/test_browser.py   # + the README's
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack, _base_env, png_digit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - the test extra brings it
    webdriver = None

pytestmark = pytest.mark.skipif(
    webdriver is None or not CHROMIUM or not CHROMEDRIVER,
    reason="needs selenium (the test extra) and Debian's chromium + chromium-driver "
    "(apt-get install -y chromium chromium-driver; .ci/run installs them)",
)

TOKEN = "a-browser-test-token-of-some-length"
SCREENSHOTS = os.environ.get("TRANSFERLAB_UI_SCREENSHOTS")
WIDTH = 1280
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_data_root: Path) -> Iterator[str]:
    """`transferlab serve` with one embedded worker and an API token; its base URL."""
    home = tmp_path_factory.mktemp("ui-stack")
    stack = Stack(home, _base_env(home, tiny_data_root, api_token=TOKEN, embedded_workers="1"))
    try:
        stack.start_api(workers=None)
        yield str(stack.client.base_url).rstrip("/")
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop_all()


@pytest.fixture(scope="module")
def driver(live: str) -> Iterator[WebDriver]:
    """Headless Chromium; it quits before the server stops (its streams close first)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={WIDTH},900", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    browser = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


@pytest.fixture(autouse=True)
def no_script_errors(driver: WebDriver) -> Iterator[None]:
    yield
    errors = [e["message"] for e in driver.get_log("browser") if e["source"] == "javascript"]
    assert errors == []


# ---------------------------------------------------------------- helpers


# Generous: on 2 busy cores the first job waits for the worker's torch import, a page for the API.
def wait(driver: WebDriver, until: Callable[[WebDriver], Any], seconds: float = 60, what: str = "") -> Any:
    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(until, message=what)


def element(driver: WebDriver, css: str, seconds: float = 60) -> Any:
    return wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, css), seconds, css)


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    wait(driver, lambda d: d.execute_script("return document.documentElement.dataset.ready") == "yes")
    driver.execute_script("window.sameDocument = true")  # gone after any reload


def same_document(driver: WebDriver) -> bool:
    return driver.execute_script("return window.sameDocument === true")


def fill(driver: WebDriver, name: str, value: str) -> None:
    field = driver.find_element(By.NAME, name)
    field.clear()
    field.send_keys(value)


def screenshot(driver: WebDriver, name: str, height: int = 900) -> None:
    """docs/ui/<name>.png when TRANSFERLAB_UI_SCREENSHOTS names a folder: the page down to `height`,
    reduced to 128 colours (small PNGs for the README)."""
    if not SCREENSHOTS:
        return
    from PIL import Image

    driver.set_window_size(WIDTH, height)
    time.sleep(0.3)  # the charts follow the width
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    driver.set_window_size(WIDTH, 900)
    folder = Path(SCREENSHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=128).save(folder / f"{name}.png", optimize=True)


# ---------------------------------------------------------------- a person's visit


def test_logging_in_takes_the_token_once_and_keeps_a_session(driver, live):
    driver.get(f"{live}/ui/experiments/new")
    assert "/ui/login?next=" in driver.current_url
    fill(driver, "token", "not the token")
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    assert "wrong token" in element(driver, "#error-token").text
    screenshot(driver, "login", 600)

    fill(driver, "token", TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait(driver, lambda d: d.current_url.endswith("/ui/experiments/new"), what="back where it was going")
    cookie = driver.get_cookie("transferlab_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]


def test_a_bad_field_gets_the_apis_422_beside_it(driver, live):
    open_page(driver, f"{live}/ui/jobs/new")
    Select(driver.find_element(By.NAME, "model")).select_by_value("simple_cnn")
    fill(driver, "hyperparameters.lr", "-1")
    driver.find_element(By.ID, "submit-job").click()

    message = element(driver, "#field-hyperparameters-lr .field-error")
    assert message.text == "Input should be greater than 0"
    assert driver.find_element(By.NAME, "hyperparameters.lr").get_attribute("aria-invalid") == "true"
    assert same_document(driver)  # htmx swapped the form in place
    assert not driver.find_element(By.ID, "field-source").is_displayed()  # a pretrain has no source
    screenshot(driver, "job-form-422", 800)


@pytest.fixture(scope="module")
def state() -> dict[str, str]:
    return {}


def test_an_experiment_from_its_form_runs_live_to_its_comparison(driver, live, state):
    open_page(driver, f"{live}/ui/experiments/new?preset=smoke")
    fill(driver, "name", "a study from the browser")
    for strategy in ("partial", "full"):  # off: linear alone, one learning rate, with its control
        driver.find_element(By.CSS_SELECTOR, f'input[name="strategies"][value="{strategy}"]').click()
    fill(driver, "frozen_blocks", "")
    fill(driver, "sweep.lr", "")
    screenshot(driver, "experiment-form", 1100)
    driver.find_element(By.ID, "submit-experiment").click()

    wait(driver, lambda d: "/ui/experiments/" in d.current_url and "new" not in d.current_url)
    open_page(driver, driver.current_url)
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#experiment-jobs tbody tr").__len__() == 3, 120,
         "the fine-tunes appear once the pre-train has succeeded")  # fmt: skip
    element(driver, "#comparison", 180)  # swapped in when the last job ended
    assert same_document(driver)  # it all came over the event stream, no reload
    assert driver.find_element(By.CSS_SELECTOR, ".facts [data-field=status]").text == "succeeded"
    assert "Transfer gains" in driver.page_source
    state["experiment"] = driver.current_url
    open_page(driver, driver.current_url)  # as it reads when visited afterwards
    screenshot(driver, "experiment", 2200)
    open_page(driver, f"{live}/ui")
    screenshot(driver, "experiments", 500)


def test_the_comparison_opens_from_the_experiment(driver, live, state):
    open_page(driver, state["experiment"])
    for box in driver.find_elements(
        By.CSS_SELECTOR, "#comparison input[name=jobs]"
    ):  # the run and its control
        box.click()
    driver.find_element(By.CSS_SELECTOR, "#experiment-results form button[type=submit]").click()
    wait(driver, lambda d: "/ui/compare?jobs=" in d.current_url)
    differing = element(driver, "table.settings").text
    assert "random_init" in differing and "dataset" not in differing
    chart = element(driver, "#chart-compare-val-accuracy")
    wait(driver, lambda d: int(chart.get_attribute("data-points") or 0) >= 2, what="curves overlaid")
    screenshot(driver, "compare", 1200)


def start_a_job(driver: WebDriver, live: str, epochs: int) -> None:
    """A small pre-train from the new-job form; the browser is on its page after."""
    open_page(driver, f"{live}/ui/jobs/new")
    Select(driver.find_element(By.NAME, "model")).select_by_value("simple_cnn")
    for name, value in {"hyperparameters.epochs": str(epochs), "hyperparameters.batch_size": "32",
                        "data.image_size": "16"}.items():  # fmt: skip
        fill(driver, name, value)
    driver.find_element(By.ID, "submit-job").click()
    wait(driver, lambda d: "/ui/jobs/" in d.current_url and "new" not in d.current_url)


def test_a_job_page_curve_gains_points_while_it_trains(driver, live, state):
    epochs = 40  # long enough that the browser sees the curve grow on a quiet machine (12 was not)
    start_a_job(driver, live, epochs=epochs)
    open_page(driver, driver.current_url)
    assert driver.find_element(By.ID, "job").get_attribute("data-mode") == "stream"

    seen: list[int] = []
    status = driver.find_element(By.CSS_SELECTOR, ".facts [data-field=status]")
    chart = driver.find_element(By.ID, "chart-loss")
    deadline = time.monotonic() + 180
    while status.text not in TERMINAL and time.monotonic() < deadline:
        points = int(chart.get_attribute("data-points") or 0)
        if not seen or points != seen[-1]:
            seen.append(points)
        time.sleep(0.1)
    assert status.text == "succeeded"
    expected = str(2 * epochs)
    wait(driver, lambda d: chart.get_attribute("data-points") == expected, what="every epoch x train and val")
    assert len([p for p in seen if 0 < p < 2 * epochs]) >= 2, (
        seen
    )  # it grew while training, not only at the end
    assert seen == sorted(seen)
    assert len(driver.find_elements(By.CSS_SELECTOR, "#epochs-table tbody tr")) == 2 * epochs
    element(driver, "#checkpoint-links")  # the results came in when it ended
    assert same_document(driver)
    state["checkpoint_page"] = element(driver, "#checkpoint-links a").get_attribute("href")
    screenshot(driver, "job", 1500)


def test_without_event_streams_the_job_page_polls_the_metrics_instead(driver, live):
    hidden = driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": "window.EventSource = undefined"}
    )
    try:
        start_a_job(driver, live, epochs=4)
        open_page(driver, driver.current_url)
        assert driver.find_element(By.ID, "job").get_attribute("data-mode") == "polling"
        chart = driver.find_element(By.ID, "chart-loss")
        wait(
            driver, lambda d: chart.get_attribute("data-points") == "8", 120, "4 epochs, from GET .../metrics"
        )
        element(driver, "#checkpoint-links")
        assert same_document(driver)
    finally:
        driver.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": hidden["identifier"]}
        )


def choose_a_finetune_checkpoint(driver: WebDriver) -> tuple[int, int]:
    select = Select(driver.find_element(By.NAME, "checkpoint"))
    option = next(o for o in select.options if " on mnist" in o.text)
    select.select_by_value(option.get_attribute("value"))
    return int(option.get_attribute("data-size")), int(option.get_attribute("data-channels"))


def test_predicting_uploaded_images_gives_the_top_three_and_the_model_input(driver, live, tmp_path):
    open_page(driver, f"{live}/ui/checkpoints")
    size, channels = choose_a_finetune_checkpoint(driver)
    paths = []
    for n in range(2):
        path = tmp_path / f"digit-{n}.png"
        path.write_bytes(png_digit())
        paths.append(str(path))
    driver.find_element(By.ID, "predict-files").send_keys("\n".join(paths))
    driver.find_element(By.ID, "predict-upload").click()

    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#predictions tr.prediction")) == 2)
    rows = driver.find_elements(By.CSS_SELECTOR, "#predictions tr.prediction")
    assert [r.find_element(By.CSS_SELECTOR, "td").text for r in rows] == ["digit-0.png", "digit-1.png"]
    for row in rows:
        assert len(row.find_elements(By.CSS_SELECTOR, ".top-row")) == 3
        canvas = row.find_element(By.CSS_SELECTOR, "canvas.model-input")
        assert (int(canvas.get_attribute("width")), channels) == (size, 1)
    assert same_document(driver)


def test_predicting_a_drawing(driver, live):
    open_page(driver, f"{live}/ui/checkpoints")
    choose_a_finetune_checkpoint(driver)
    canvas = driver.find_element(By.ID, "draw")
    strokes = ActionChains(driver).move_to_element_with_offset(canvas, -10, -70).click_and_hold()
    for dx, dy in ((10, 30), (10, 30), (5, 40), (0, 30)):
        strokes = strokes.move_by_offset(dx, dy)
    strokes.release().perform()
    assert canvas.get_attribute("data-strokes") == "1"
    driver.find_element(By.ID, "predict-draw").click()

    row = element(driver, "#predictions tr.prediction")
    assert row.find_element(By.CSS_SELECTOR, "td").text == "drawing.png"
    assert row.get_attribute("data-label") in {str(d) for d in range(10)}
    assert len(row.find_elements(By.CSS_SELECTOR, ".top-row")) == 3
    screenshot(driver, "checkpoints", 1000)
