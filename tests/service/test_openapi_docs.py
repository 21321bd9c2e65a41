"""The API's description as intake serves it: the OpenAPI document and the docs page, both
without a key; the page renders every operation in a real browser under its strict
Content-Security-Policy (skipped where Debian's chromium is missing)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import requests

from services.intake.service import IntakeService

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from browser import chromium, screenshot, until


def test_the_document_and_its_page_are_served_without_a_key(
    run_services: Any, http_port: int
) -> None:
    run_services(IntakeService)
    base = f"http://127.0.0.1:{http_port}"
    r = requests.get(f"{base}/api/v1/openapi.json", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert doc["servers"] == [{"url": base}]  # GRIDFLOW_PUBLIC_URL
    operations = sum(len(item) for item in doc["paths"].values())
    page = requests.get(f"{base}/api/v1/docs", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]

    from selenium.webdriver.common.by import By

    driver = chromium()
    try:
        driver.get(f"{base}/api/v1/docs#op-post_report")
        until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "main details.op[id^=op-]"))
              == operations, what="every operation rendered")
        report = driver.find_element(By.ID, "op-post_report")
        assert report.get_attribute("open")  # the anchor opens it
        assert "report_id" in report.text and "ReportAnswer" in report.text
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        screenshot(driver, "api-docs")
    finally:
        driver.quit()
