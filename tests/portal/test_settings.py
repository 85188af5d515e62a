"""Settings come from the environment and hold up under production checks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PORTAL_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_manage_py_works_without_a_settings_module_in_the_environment(tmp_path):
    result = manage("check", env={"PORTAL_VAR_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    env = {
        "DJANGO_SETTINGS_MODULE": "portal.settings_production",
        "DJANGO_SECRET_KEY": "x" * 20 + "a-long-random-production-secret-key-0123456789",
        "PORTAL_VAR_DIR": str(tmp_path),
    }
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    env = {"DJANGO_SETTINGS_MODULE": "portal.settings_production", "PORTAL_VAR_DIR": str(tmp_path)}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize(("name", "value"), [("DJANGO_DEBUG", "maybe"), ("PORTAL_MAX_EVENT_BYTES", "lots")])
def test_a_bad_environment_value_is_refused_by_name(tmp_path, name, value):
    result = manage("check", env={name: value, "PORTAL_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert name in result.stderr


def test_debug_is_off_and_hosts_are_local_by_default(tmp_path):
    code = "from django.conf import settings; print(settings.DEBUG, settings.ALLOWED_HOSTS)"
    result = manage("shell", "-c", code, env={"PORTAL_VAR_DIR": str(tmp_path)})
    assert result.stdout.strip().splitlines()[-1] == "False ['localhost', '127.0.0.1']", result.stderr


@pytest.mark.parametrize(("prepare", "threshold"), [(None, "1"), ("false", "None")])
def test_prepared_statements_are_on_for_postgresql_unless_turned_off(tmp_path, prepare, threshold):
    code = "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'].get('prepare_threshold'))"
    env = {"PORTAL_VAR_DIR": str(tmp_path), "DATABASE_URL": "postgres://portal@db.invalid/portal"}
    if prepare is not None:
        env["PORTAL_DB_PREPARE"] = prepare
    result = manage("shell", "-c", code, env=env)
    assert result.stdout.strip().splitlines()[-1] == threshold, result.stderr
