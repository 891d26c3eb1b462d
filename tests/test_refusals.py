"""The page's one refusal path (`draggan.app.refusals.answer`): a `DragGANError` is the visitor's message in a
toast and the page stays as it was; anything else is a bug, logged with its traceback under an incident id that
the visitor's apology carries; the API raises both as `gr.Error`; a job slot is claimed for the whole call."""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from draggan.app.refusals import answer, unchanged
from draggan.errors import LimitError, UploadError, UserError
from draggan.server.visitors import Visitors

ROOT = Path(__file__).resolve().parents[1]


class Panel:
    def __init__(self) -> None:
        self.studio = SimpleNamespace(visitors=Visitors())
        self.page = SimpleNamespace(stats="stats")

    @answer()
    def refuse(self, value):
        raise LimitError("seed", f"seed must be a number, got {value!r}")

    @answer()
    def bug(self, value):
        return {"x": 1 / value}

    @answer(api=True)
    def api_bug(self, value):
        return [][value]

    @answer(api=True)
    def api_refuse(self):
        raise UserError("Model x is not available")

    @answer("a drag")
    def job(self, request=None):
        return sorted(self.studio.visitors.running().values())

    def _said(self, text, began, *args, **kwargs):
        return {self.page.stats: f"said: {text} ({'began' if began else 'not begun'})"}

    @answer("a drag", said=_said)
    def stream(self, fail_after: int, request=None):
        for i in range(fail_after):
            yield {self.page.stats: i}
        raise UserError("the drag failed")


@pytest.fixture()
def shown(monkeypatch):
    toasts: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: toasts.append(msg))
    return toasts


def test_a_refusal_is_the_visitors_message_and_the_page_stays(shown):
    assert Panel().refuse("x") == unchanged() and shown == ["seed must be a number, got 'x'"]


def test_a_bug_is_an_apology_with_an_incident_id_found_in_the_log(shown, caplog):
    with caplog.at_level(logging.ERROR, logger="draggan.app"):
        assert Panel().bug(0) == unchanged()
    (text,) = shown
    incident = re.search(r"incident ([0-9a-f]{10})", text).group(1)
    assert "ZeroDivisionError" not in text and "division" not in text, "a bug's text never reaches the visitor"
    (record,) = caplog.records
    assert incident in record.getMessage() and "Panel.bug" in record.getMessage()
    assert record.exc_info[0] is ZeroDivisionError, "logged with its traceback"


def test_the_api_raises_refusals_and_bugs_as_gradio_errors(shown, caplog):
    with pytest.raises(gr.Error, match="Model x is not available"):
        Panel().api_refuse()
    with pytest.raises(gr.Error, match=r"incident [0-9a-f]{10}"):
        Panel().api_bug(3)
    assert not shown


def _request(session: str):
    return SimpleNamespace(client=SimpleNamespace(host="93.184.216.1"), headers={}, session_hash=session)


def test_the_job_slot_is_held_for_the_call_and_a_second_job_refused(shown):
    panel = Panel()
    assert panel.job(request=_request("tab-1")) == ["a drag", "a drag"] and panel.studio.visitors.running() == {}
    stream = panel.stream(5, _request("tab-1"))
    assert next(stream) == {"stats": 0} and set(panel.studio.visitors.running().values()) == {"a drag"}
    assert panel.job(_request("tab-2")) == unchanged() and "already have a drag running" in shown[-1]
    stream.close()
    assert panel.studio.visitors.running() == {}


def test_a_stream_says_its_refusal_once_and_keeps_what_it_sent(shown):
    assert list(Panel().stream(0)) == [{"stats": "said: the drag failed (not begun)"}]
    assert list(Panel().stream(2)) == [{"stats": 0}, {"stats": 1}, {"stats": "said: the drag failed (began)"}]
    assert shown == ["the drag failed"] * 2


def test_the_handlers_keep_gradios_signature():
    """Gradio reads a handler's parameters (the request, progress, event data); the wrapper shows the same."""
    import inspect

    from draggan.app.events.drag import DragPanel
    from draggan.app.events.photo import PhotoPanel

    assert list(inspect.signature(DragPanel.start).parameters) == ["self", "ui", "request"]
    assert inspect.isgeneratorfunction(DragPanel.start) and inspect.isgeneratorfunction(PhotoPanel.invert_photo)


def test_uploads_are_refused_as_refusals(tmp_path):
    from draggan.service.models import check_upload

    bad = tmp_path / "notes.txt"
    bad.write_text("x")
    with pytest.raises(UploadError, match="not a model file"):
        check_upload(bad, 10)


def _handlers_with_try(path: Path) -> list[str]:
    """`try` statements that catch a refusal (`UserError`/`DragGANError`) inside panel methods."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                if handler.type is not None and re.search(r"UserError|DragGANError", ast.unparse(handler.type)):
                    found.append(f"{path.name}:{node.lineno}")
    return found


BUILTIN_CATCH_ALLOWED = {
    "refusals.py": "the one place a bug is caught, logged and said as one",
    "served.py": "deletes a half-written file and raises again",
    "gpu.py": "an inversion thread's exception, raised again in the caller; optional imports",
    "drawing.py": "a missing font file (OSError) falls back to PIL's own",
}


def test_no_panel_catches_refusals_itself_and_no_catch_all_of_builtins():
    bare = {"Exception", "BaseException", "ValueError", "OSError", "RuntimeError", "TypeError", "KeyError"}
    for path in sorted([*(ROOT / "draggan" / "app").rglob("*.py"), *(ROOT / "draggan" / "service").rglob("*.py")]):
        if path.parent.name == "events":
            assert not _handlers_with_try(path), f"{path.name} catches a refusal itself; `answer` does that"
        if path.name in BUILTIN_CATCH_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = {n.split(".")[-1] for n in re.findall(r"[\w.]+", ast.unparse(node.type))}
                assert not names & bare, f"{path.relative_to(ROOT)}:{node.lineno} catches {names & bare}"
