"""The test run says plainly when the browser tests did not run (the conftest's summary line), and its header
names the Chromium it found."""

from __future__ import annotations

from pathlib import Path


import conftest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py").read_text(encoding="utf-8")


def test_a_skipped_browser_module_is_reported_in_the_summary(pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_browser_stub="import pytest\npytest.skip('no chromium', allow_module_level=True)\n",
                        test_other_stub="def test_ok():\n    pass\n")
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*browser tests did NOT run*apt-get install chromium*"])


def test_no_note_when_the_browser_tests_ran(pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_browser_stub="def test_page():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "did NOT run" not in result.stdout.str()
    assert "browser tests:" in result.stdout.str()


def test_find_chromium_honours_the_setting_and_ignores_missing_files(monkeypatch, tmp_path) -> None:
    fake = tmp_path / "chrome"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("DRAGGAN_CHROMIUM", str(fake))
    assert conftest.find_chromium() == str(fake)
    monkeypatch.setenv("DRAGGAN_CHROMIUM", str(tmp_path / "missing"))
    assert conftest.find_chromium() != str(tmp_path / "missing")
