"""The `[audit]` section (`regate.settings`) and what names the store (`gateway.audit_stores`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_settings import minimal, parse

from gateway.audit_postgres import AuditStoreError, describe, read_password
from gateway.audit_stores import PostgresSource, SqliteSource, audit_source
from regate.settings import AuditSettings, ConfigError

DSN = "host=db.internal port=5433 dbname=regate user=regate"


def with_audit(**audit: Any) -> Any:
    return parse(minimal() | {"audit": audit})


def test_no_section_is_the_sqlite_store_in_the_state_dir() -> None:
    settings = parse(minimal())
    assert settings.audit == AuditSettings(store="sqlite")
    assert audit_source(settings) == SqliteSource(Path("/srv/regate/state/audit.sqlite3"))


def test_postgres_store() -> None:
    settings = with_audit(
        store="postgres", dsn=DSN, password_file="secrets/audit.password", timeout_s=2
    )
    assert settings.audit == AuditSettings(
        store="postgres",
        dsn=DSN,
        password_file=Path("/srv/regate/secrets/audit.password"),
        timeout_s=2.0,
    )
    source = audit_source(settings)
    assert isinstance(source, PostgresSource)
    assert str(source) == "postgresql://regate@db.internal:5433/regate"


SECRET = "hunter2-not-for-logs"

BAD: list[Any] = [
    pytest.param({"store": "mysql"}, "audit.store must be one of", id="unknown-store"),
    pytest.param({"store": "postgres"}, "audit.dsn is required", id="no-dsn"),
    pytest.param({"store": "postgres", "dsn": ""}, "audit.dsn is required", id="empty-dsn"),
    pytest.param(
        {"store": "postgres", "dsn": f"host=db password={SECRET}"},
        "must not hold the password",
        id="password-in-key-value-dsn",
    ),
    pytest.param(
        {"store": "postgres", "dsn": f"postgresql://regate:{SECRET}@db/regate"},
        "must not hold the password",
        id="password-in-uri",
    ),
    pytest.param(
        {"store": "postgres", "dsn": f"host=db {SECRET}"},
        "not a valid libpq connection string",
        id="unparsable-dsn",
    ),
    pytest.param(
        {"store": "postgres", "dsn": DSN, "password_file": "p", "password_env": "P"},
        "at most one of password_file and password_env",
        id="two-password-sources",
    ),
    pytest.param(
        {"store": "postgres", "dsn": DSN, "timeout_s": 0}, "audit.timeout_s", id="zero-timeout"
    ),
]


@pytest.mark.parametrize(("audit", "message"), BAD)
def test_bad_audit_section_is_refused_without_echoing_secrets(
    audit: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        with_audit(**audit)
    assert SECRET not in str(refused.value)


def test_describe_never_shows_a_password() -> None:
    # Settings refuse such a DSN, but what names the store must hide it regardless.
    shown = describe(AuditSettings(store="postgres", dsn=f"postgresql://u:{SECRET}@h:1/d"))
    assert shown == "postgresql://u@h:1/d"
    assert SECRET not in describe(AuditSettings(store="postgres", dsn=f"host=h {SECRET}"))


def test_password_from_file_and_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\nsecond line is not part of it\n")
    assert read_password(AuditSettings("postgres", DSN, password_file=secret)) == "s3cret"
    monkeypatch.setenv("REGATE_AUDIT_PASSWORD", "from-env")
    env = AuditSettings("postgres", DSN, password_env="REGATE_AUDIT_PASSWORD")
    assert read_password(env) == "from-env"
    assert read_password(AuditSettings("postgres", DSN)) is None  # trust, certs or ~/.pgpass


def test_missing_password_sources_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = tmp_path / "absent"
    with pytest.raises(AuditStoreError, match=f"cannot read audit.password_file {absent}"):
        read_password(AuditSettings("postgres", DSN, password_file=absent))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(AuditStoreError, match="is empty: put the password on its first line"):
        read_password(AuditSettings("postgres", DSN, password_file=empty))
    monkeypatch.delenv("REGATE_AUDIT_PASSWORD", raising=False)
    with pytest.raises(AuditStoreError, match="REGATE_AUDIT_PASSWORD, which is not set"):
        read_password(AuditSettings("postgres", DSN, password_env="REGATE_AUDIT_PASSWORD"))
