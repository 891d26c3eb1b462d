"""`python -m draggan.deploy`: the dry run lists exactly what the upload sends; the upload goes through
`HfApi.upload_folder` (mocked here: the network boundary) with the same ignore patterns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from draggan import deploy

REPO_ROOT = Path(__file__).resolve().parents[1]


def _tree(root: Path, files: list[str]) -> Path:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


def test_dry_run_of_this_repository_lists_the_app_and_leaves_out_tests_git_and_caches() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("HF_TOKEN", None)
    result = subprocess.run([sys.executable, "-m", "draggan.deploy", "--dry-run", "--space", "me/app"],
                            capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    files = result.stdout.split()
    assert files == deploy.upload_plan(REPO_ROOT) and files == sorted(files)
    for needed in ("app.py", "README.md", "requirements.txt", "draggan/__init__.py", "draggan/service/models.py",
                   "checkpoints/zoo.json", "checkpoints/cartoon-faces-128/model.safetensors"):
        assert needed in files
    for path in files:
        assert not path.startswith(("tests/", ".git/", ".github/", ".ci/", "bench/", ".pytest_cache/", "runs/"))
        assert "__pycache__" not in path and not path.endswith(".pyc")
    assert f"{len(files)} files would be uploaded to me/app" in result.stderr


def test_plan_applies_our_and_huggingface_hubs_ignore_patterns(tmp_path) -> None:
    root = _tree(tmp_path / "repo", [
        "app.py", "draggan/x.py", "draggan/__pycache__/x.cpython-311.pyc", "draggan/sub/__pycache__/y.pyc",
        "checkpoints/m/model.safetensors", "tests/test_x.py", ".git/HEAD", "vendor/.git/config",
        ".cache/huggingface/download/a", ".github/workflows/t.yml", ".pytest_cache/v", "runs/r/log.txt",
        "docs/screenshot.png",
    ])
    assert deploy.upload_plan(root) == ["app.py", "checkpoints/m/model.safetensors", "docs/screenshot.png",
                                        "draggan/x.py"]


def test_upload_sends_the_folder_with_the_same_patterns_and_mirrors_it(tmp_path, monkeypatch) -> None:
    root = _tree(tmp_path / "repo", ["app.py", "tests/t.py"])
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kwargs):
            calls["create"] = (repo_id, kwargs)

        def upload_folder(self, **kwargs):
            calls["upload"] = kwargs
            return type("Info", (), {"commit_url": "https://huggingface.co/spaces/me/app/commit/abc"})()

    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert deploy.main(["--space", "me/app", "--folder", str(root)]) == 0
    assert calls["token"] == "hf_secret"
    assert calls["create"] == ("me/app", {"repo_type": "space", "space_sdk": "gradio", "exist_ok": True})
    upload = calls["upload"]
    assert upload["repo_id"] == "me/app" and upload["repo_type"] == "space"
    assert Path(upload["folder_path"]) == root.resolve() and upload["delete_patterns"] == ["*"]
    assert upload["ignore_patterns"] == deploy.IGNORE_PATTERNS


@pytest.mark.parametrize("argv, env, message", [
    (["--space", "me/app"], {}, "HF_TOKEN"),
    ([], {"HF_TOKEN": "t"}, "owner/name"),
])
def test_a_real_upload_needs_a_space_and_a_token(tmp_path, monkeypatch, capsys, argv, env, message) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv(deploy.SPACE_ENV, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    root = _tree(tmp_path / "repo", ["app.py"])
    assert deploy.main([*argv, "--folder", str(root)]) == 2
    assert message in capsys.readouterr().err


def test_workflow_deploys_on_push_to_main_with_the_secret_and_the_variable() -> None:
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "deploy-space.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))
    assert triggers["push"]["branches"] == ["main"]
    text = (REPO_ROOT / ".github" / "workflows" / "deploy-space.yml").read_text()
    assert "secrets.HF_TOKEN" in text and "vars.HF_SPACE_ID" in text
    assert "python -m draggan.deploy --dry-run" in text and "python -m draggan.deploy --message" in text
