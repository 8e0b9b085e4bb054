"""Secrets: referenced in aml_config files, delivered to the run, masked everywhere amlrun
writes or prints, even when the script prints them itself."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from amlrun.secrets import MASK, CredentialStore, Redactor, project_references

TOKEN = 'tok-"Q\\x9-5f3e1b7a'  # a quote and a backslash: JSON spells it differently
PASSWORD = "pw-8d1c0e55aa"

SCRIPTS = {
    "ok.py": """
        import hashlib, os, sys
        from amlrun_client import log
        token = os.environ["API_TOKEN"]
        print("token is", token)
        print("stderr", token, file=sys.stderr)
        log("leak", token)
        log("leaks", [token, "x"])
        os.makedirs("outputs", exist_ok=True)
        open("outputs/hash.txt", "w").write(hashlib.sha256(token.encode()).hexdigest())
    """,
    "boom.py": """
        import os
        raise RuntimeError("bad token " + os.environ["API_TOKEN"])
    """,
}


def everything_under(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_nowhere(value: str, project, *outputs: str) -> None:
    forms = {value.encode(), json.dumps(value)[1:-1].encode()}
    for path, data in everything_under(project.root).items():
        for form in forms:
            assert form not in data, f"secret found in {path}"
    for text in outputs:
        for form in forms:
            assert form.decode() not in text


def test_env_secret_reaches_the_run_and_is_masked_everywhere(project):
    project.write({
        "aml_config/secure.runconfig": "Target: local\nEnvironmentVariables:\n  API_TOKEN: secret:MY_API_TOKEN\n",
        **SCRIPTS,
    })
    env = {"MY_API_TOKEN": TOKEN}
    result = project.run("-c", "secure", "--stream", env=env)
    assert result.returncode == 1, result.output  # boom.py fails
    assert "ok.py" in result.stdout and "boom.py" in result.stdout
    assert f"token is {MASK}" in result.stdout and f"bad token {MASK}" in result.output
    runs = {r["script"]: r for r in json.loads(project.run("history", "list", "--format", "json").stdout)}
    ok_dir = project.root / ".amlrun" / "runs" / runs["ok.py"]["run_id"]
    assert (ok_dir / "outputs" / "hash.txt").read_text() == hashlib.sha256(TOKEN.encode()).hexdigest()
    assert f"token is {MASK}" in (ok_dir / "log.txt").read_text()
    assert runs["ok.py"]["metrics"]["leak"] == MASK
    shown = [project.run("history", *args, env=env).output for args in
             (["show", runs["ok.py"]["run_id"]], ["logs", runs["boom.py"]["run_id"]], ["list"],
              ["show", "last", "--format", "json"])]
    collect = project.run("-c", "secure", "--collect-only", "-v", env=env)
    assert collect.returncode == 0
    assert_nowhere(TOKEN, project, result.stdout, result.stderr, collect.output, *shown)


def test_credentials_file_secret(project):
    creds = Path(os.environ["AMLRUN_CREDENTIALS"])
    assert project.root not in creds.parents  # it lives outside the project
    CredentialStore(creds).put("DB_PASSWORD", PASSWORD)
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    project.write({
        "aml_config/db.runconfig": "Target: local\nEnvironmentVariables:\n  API_TOKEN: AzureMlSecret=DB_PASSWORD\n",
        "ok.py": SCRIPTS["ok.py"],
    })
    try:
        result = project.run("ok.py", "-c", "db")
        assert result.returncode == 0, result.output
        run_dir = project.root / ".amlrun" / "runs" / json.loads(
            project.run("history", "list", "--format", "json").stdout)[0]["run_id"]
        assert (run_dir / "outputs" / "hash.txt").read_text() == hashlib.sha256(PASSWORD.encode()).hexdigest()
        assert_nowhere(PASSWORD, project, result.output)

        os.chmod(creds, 0o644)
        refused = project.run("ok.py", "-c", "db")
        assert refused.returncode == 4
        assert "chmod 600" in refused.stderr and "Traceback" not in refused.output
        assert PASSWORD not in refused.output
    finally:
        creds.unlink()


def test_missing_secret_is_one_clear_line(project):
    project.write({
        "aml_config/secure.runconfig": "Target: local\nEnvironmentVariables:\n  API_TOKEN: secret:NOT_SET_ANYWHERE\n",
        "ok.py": SCRIPTS["ok.py"],
    })
    result = project.run("ok.py", "-c", "secure")
    assert result.returncode == 4, result.output
    assert "Traceback" not in result.output
    assert "aml_config/secure.runconfig" in result.stderr and "NOT_SET_ANYWHERE" in result.stderr
    record = json.loads(project.run("history", "list", "--format", "json").stdout)[0]
    assert record["status"] == "failed" and "NOT_SET_ANYWHERE" in record["reason"]  # why, not "died"


def test_compute_file_secret_is_masked_even_before_anything_resolves_it(project):
    """A compute file's ``password: env:NAME``: a value printed by the script is masked."""
    project.write({
        "aml_config/box.compute": "type: local\npassword: env:BOX_PASSWORD\n",
        "leaky.py": "import os\nprint('pw', os.environ['BOX_PASSWORD'])\n",
    })
    result = project.run("leaky.py", "-c", "box", env={"BOX_PASSWORD": PASSWORD})
    assert result.returncode == 0, result.output
    assert f"pw {MASK}" in result.stdout
    assert_nowhere(PASSWORD, project, result.output)
    assert project_references(project.root / "aml_config") == ["env:BOX_PASSWORD"]


def test_redactor_masks_json_spellings_and_ignores_tiny_values():
    redact = Redactor()
    redact.add(TOKEN)
    redact.add("ab")
    assert redact(f"x {TOKEN} y") == f"x {MASK} y"
    assert redact(json.dumps({"v": TOKEN})) == json.dumps({"v": MASK})
    assert redact("ab cd") == "ab cd"
    assert Redactor()("nothing to hide") == "nothing to hide"


def test_world_readable_credentials_are_refused(tmp_path):
    from amlrun.errors import ConfigError

    path = tmp_path / "credentials.yml"
    CredentialStore(path).put("A", "value-1")
    assert CredentialStore(path).get("A") == "value-1"
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        CredentialStore(path).get("A")
