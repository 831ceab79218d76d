"""Settings for every Regate process, built in one place from a TOML file.

Relative paths in the file are resolved against the file's own directory, so a
config works the same whatever the current directory is. Everything is checked
here, once, and a bad value raises `ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regate.crypto import SUPPORTED_ALGORITHMS


class ConfigError(Exception):
    """The configuration is unusable; the message names the key and how to fix it."""


@dataclass(frozen=True)
class Address:
    """Where a server listens or a client connects: a unix socket or host:port."""

    host: str = ""
    port: int = 0
    uds: Path | None = None

    @classmethod
    def parse(cls, value: str, key: str, base: Path) -> Address:
        expected = (
            f"{key} = {value!r}: expected 'host:port', 'http://host:port' or 'unix:/path.sock'"
        )
        if value.startswith("unix:"):
            if not value.removeprefix("unix:"):
                raise ConfigError(expected)
            return cls(uds=_path(value.removeprefix("unix:"), base))
        host, sep, port = value.removeprefix("http://").rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]  # [::1]:8181
        elif ":" in host:
            raise ConfigError(expected + " (write IPv6 hosts in brackets, e.g. '[::1]:8181')")
        if not sep or not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(expected)
        return cls(host=host, port=int(port))

    @property
    def host_port(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return "http://localhost" if self.uds else f"http://{self.host_port}"

    def __str__(self) -> str:
        return f"unix:{self.uds}" if self.uds else f"http://{self.host_port}"


@dataclass(frozen=True)
class IssuerSettings:
    issuer: str
    jwks_file: Path | None
    algorithms: tuple[str, ...]
    jwks_url: str | None = None  # https://, or http://127.0.0.1 with allow_http_loopback
    jwks_refresh_s: float = 300.0
    jwks_cooldown_s: float = 30.0
    jwks_max_stale_s: float = 3600.0
    typ: str | None = None  # required JOSE `typ`, e.g. "at+jwt"; None: not checked
    max_token_age_s: int = 86400  # `iat` older than this is refused
    require_jti: bool = False  # refuse tokens without `jti`, and any `jti` seen before


@dataclass(frozen=True)
class GatewaySettings:
    listen: Address
    state_dir: Path
    audience: str
    leeway_s: int = 30
    max_body_bytes: int = 64 * 1024
    grant_ttl_s: int = 30
    # The front door (docs/threat-model.md, "The HTTP layer").
    allowed_hosts: tuple[str, ...] = ()  # empty: any Host
    trusted_proxies: tuple[str, ...] = ()  # addresses/CIDRs whose X-Forwarded-For counts
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_connections: int = 1000
    # Signed checkpoints of the audit log (gateway/checkpoints.py): every N records or
    # T seconds, whichever first, and on a clean shutdown.
    audit_checkpoint_records: int = 1000
    audit_checkpoint_s: float = 60.0

    @property
    def audit_db(self) -> Path:
        return self.state_dir / "audit.sqlite3"

    @property
    def grant_key(self) -> Path:
        return self.state_dir / "keys" / "gateway.private.jwk"

    @property
    def gateway_jwks(self) -> Path:
        """The public half of `grant_key`: what verifies grants and audit checkpoints."""
        return self.grant_key.with_name("gateway.jwks.json")


@dataclass(frozen=True)
class OpaSettings:
    url: Address
    timeout_s: float = 0.5
    listen: Address | None = None  # where `regate up` starts the sidecar
    policies_dir: Path | None = None
    # The circuit breaker (gateway/breaker.py): this many calls in a row that OPA does
    # not answer open it; calls are then denied at once until a probe after the cool-down.
    breaker_failures: int = 5
    breaker_cooldown_s: float = 5.0
    # Go's GOGC for the sidecar `regate up` starts: a decision allocates a lot and
    # lives briefly, so collecting less often saves ~1/3 of OPA's CPU per decision
    # (docs/benchmarks.md) for a larger heap. A GOGC in the environment wins.
    gogc: int = 400


@dataclass(frozen=True)
class RunnerSettings:
    url: Address  # where the gateway reaches the runner
    listen: Address  # where the runner listens
    agents_dir: Path
    # The runner's staged copy of the tools, readable by the sandbox uid. None: a
    # fresh private temp dir per runner start, removed when the runner stops.
    work_dir: Path | None
    grant_jwks: Path
    timeout_s: float = 60.0
    backend: str = "bwrap"  # or "nsjail"
    bwrap: str = "bwrap"
    nsjail: str = "nsjail"
    sandbox_uid: int = 65534
    sandbox_gid: int = 65534
    # Ceilings no grant can exceed, and how many tools run at once.
    max_timeout_s: float = 60.0
    max_memory_mb: int = 1024
    max_output_kb: int = 1024
    max_pids: int = 64
    max_concurrent: int = 4
    # Pre-started sandboxes kept per tool, each used for one call (0: start per call).
    pool_size: int = 0


@dataclass(frozen=True)
class ManifestSettings:
    dir: Path
    publishers_jwks: Path
    revoked_kids: tuple[str, ...] = ()  # publisher keys whose signatures no longer count
    # Approve every pending manifest by itself (actor "auto-approve"): tests and demos only.
    auto_approve: bool = False
    reload_interval_s: float = 2.0  # how often manifest files and the trust store are checked


@dataclass(frozen=True)
class OidcSettings:
    """Single sign-on for the admin console (docs/admin.md): an OpenID Connect provider."""

    issuer: str  # must equal the `issuer` its discovery document states
    client_id: str
    client_secret_file: Path
    console_url: str  # the console as browsers reach it; redirect URI = this + /auth/callback
    cookie_secret_file: Path  # signs session, login and CSRF values (>= 32 bytes, chmod 600)
    admin_groups: tuple[str, ...]  # a member of any may approve, revoke and deny
    viewer_groups: tuple[str, ...]  # a member of any may read
    groups_claim: str = "groups"  # dotted path into the ID token, e.g. "realm_access.roles"
    scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")
    id_token_algorithms: tuple[str, ...] = ("RS256", "ES256")
    session_idle_s: int = 1800
    session_max_s: int = 8 * 3600
    timeout_s: float = 10.0  # each call to the provider

    @property
    def redirect_uri(self) -> str:
        return self.console_url + "/auth/callback"

    @property
    def secure_cookies(self) -> bool:
        return self.console_url.startswith("https://")


@dataclass(frozen=True)
class AdminSettings:
    """The admin API's own listener; without a token it is never served (docs/trust.md)."""

    listen: Address
    token_file: Path
    oidc: OidcSettings | None = None  # no [admin.oidc]: no console, the API takes the token


@dataclass(frozen=True)
class ShadowSettings:
    """The shadow policy (gateway/shadow.py): asked beside the enforced one, never obeyed."""

    sample_rate: float = 0.0  # share of calls that also ask the shadow; 0: off, 1: every call
    max_wait_s: float = 0.05  # how long past the enforced answer a call may wait for it


@dataclass(frozen=True)
class AuditSettings:
    """Where the decision log is kept (docs/operators.md, "The audit log")."""

    store: str = "sqlite"  # <state_dir>/audit.sqlite3; "postgres": one chain for many replicas
    dsn: str = ""  # libpq key=value string or postgresql:// URI, never with the password
    password_file: Path | None = None  # the database password, read at each connect
    password_env: str | None = None  # or the environment variable holding it
    timeout_s: float = 5.0  # connect, lock wait and statement deadline; slower is a 503


@dataclass(frozen=True)
class CallApprovalSettings:
    """Calls parked because policy said `require_approval` (gateway/call_approvals.py)."""

    # From parking until the approved call must have been replayed; then it is a deny.
    ttl_s: int = 3600
    # Pending approvals one caller may have at once: parking is cheap, reviewing is not.
    max_pending_per_caller: int = 20


@dataclass(frozen=True)
class Settings:
    gateway: GatewaySettings
    opa: OpaSettings
    runner: RunnerSettings
    manifests: ManifestSettings
    issuers: tuple[IssuerSettings, ...]
    source: Path = field(default=Path("."))
    admin: AdminSettings | None = None  # no [admin] section: no admin listener
    shadow: ShadowSettings = field(default_factory=ShadowSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    call_approvals: CallApprovalSettings = field(default_factory=CallApprovalSettings)


def load_settings(path: Path | str | None = None) -> Settings:
    """Read settings from `path` (or $REGATE_CONFIG) and validate them."""
    chosen = path or os.environ.get("REGATE_CONFIG")
    if not chosen:
        raise ConfigError("no configuration: pass --config FILE or set REGATE_CONFIG")
    file = Path(chosen).resolve()
    try:
        raw = tomllib.loads(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {file}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    return parse_settings(raw, base=file.parent, source=file)


def parse_settings(raw: Mapping[str, Any], base: Path, source: Path) -> Settings:
    gw = _table(raw, "gateway")
    state_dir = _path(_str(gw, "gateway.state_dir"), base)
    gateway = GatewaySettings(
        listen=Address.parse(_str(gw, "gateway.listen", "127.0.0.1:8080"), "gateway.listen", base),
        state_dir=state_dir,
        audience=_str(gw, "gateway.audience"),
        leeway_s=_int(gw, "gateway.leeway_s", 30, low=0, high=300),
        max_body_bytes=_int(gw, "gateway.max_body_bytes", 64 * 1024, low=64, high=16 << 20),
        grant_ttl_s=_int(gw, "gateway.grant_ttl_s", 30, low=1, high=600),
        allowed_hosts=_strings(gw, "gateway.allowed_hosts"),
        trusted_proxies=_networks(gw, "gateway.trusted_proxies"),
        header_timeout_s=_float(gw, "gateway.header_timeout_s", 10.0, low=0.1, high=300),
        body_timeout_s=_float(gw, "gateway.body_timeout_s", 10.0, low=0.1, high=300),
        max_connections=_int(gw, "gateway.max_connections", 1000, low=1, high=100_000),
        audit_checkpoint_records=_int(
            gw, "gateway.audit_checkpoint_records", 1000, low=1, high=1_000_000
        ),
        audit_checkpoint_s=_float(gw, "gateway.audit_checkpoint_s", 60.0, low=0.1, high=86400),
    )

    op = _table(raw, "opa")
    listen = op.get("listen")
    policies = op.get("policies_dir")
    opa = OpaSettings(
        url=Address.parse(_str(op, "opa.url"), "opa.url", base),
        timeout_s=_float(op, "opa.timeout_s", 0.5, low=0.01, high=30),
        listen=Address.parse(_str(op, "opa.listen"), "opa.listen", base) if listen else None,
        policies_dir=_path(_str(op, "opa.policies_dir"), base) if policies else None,
        breaker_failures=_int(op, "opa.breaker_failures", 5, low=1, high=1000),
        breaker_cooldown_s=_float(op, "opa.breaker_cooldown_s", 5.0, low=0.05, high=3600),
        gogc=_int(op, "opa.gogc", 400, low=25, high=10000),
    )

    rn = _table(raw, "runner")
    runner = RunnerSettings(
        url=Address.parse(_str(rn, "runner.url"), "runner.url", base),
        listen=Address.parse(_str(rn, "runner.listen"), "runner.listen", base),
        agents_dir=_path(_str(rn, "runner.agents_dir"), base),
        work_dir=_path(_str(rn, "runner.work_dir"), base) if rn.get("work_dir") else None,
        grant_jwks=_path(
            _str(rn, "runner.grant_jwks", str(state_dir / "keys" / "gateway.jwks.json")), base
        ),
        timeout_s=_float(rn, "runner.timeout_s", 60.0, low=1, high=3600),
        backend=_choice(rn, "runner.backend", "bwrap", ("bwrap", "nsjail")),
        bwrap=_str(rn, "runner.bwrap", "bwrap"),
        nsjail=_str(rn, "runner.nsjail", "nsjail"),
        sandbox_uid=_int(rn, "runner.sandbox_uid", 65534, low=1, high=2**31),
        sandbox_gid=_int(rn, "runner.sandbox_gid", 65534, low=1, high=2**31),
        max_timeout_s=_float(rn, "runner.max_timeout_s", 60.0, low=0.1, high=3600),
        max_memory_mb=_int(rn, "runner.max_memory_mb", 1024, low=16, high=1 << 20),
        max_output_kb=_int(rn, "runner.max_output_kb", 1024, low=1, high=1 << 20),
        max_pids=_int(rn, "runner.max_pids", 64, low=1, high=4096),
        max_concurrent=_int(rn, "runner.max_concurrent", 4, low=1, high=256),
        pool_size=_int(rn, "runner.pool_size", 0, low=0, high=16),
    )

    mf = _table(raw, "manifests")
    manifests = ManifestSettings(
        dir=_path(_str(mf, "manifests.dir"), base),
        publishers_jwks=_path(_str(mf, "manifests.publishers_jwks"), base),
        revoked_kids=_strings(mf, "manifests.revoked_kids"),
        auto_approve=_bool(mf, "manifests.auto_approve", False),
        reload_interval_s=_float(mf, "manifests.reload_interval_s", 2.0, low=0.05, high=3600),
    )
    admin = _admin(raw, base)

    issuers_raw = raw.get("issuers")
    if not isinstance(issuers_raw, list) or not issuers_raw:
        raise ConfigError("[[issuers]]: at least one trusted token issuer is required")
    issuers = tuple(_issuer(entry, i, base) for i, entry in enumerate(issuers_raw))
    names = [i.issuer for i in issuers]
    if len(set(names)) != len(names):
        raise ConfigError("[[issuers]]: each issuer may appear only once")
    return Settings(
        gateway,
        opa,
        runner,
        manifests,
        issuers,
        source,
        admin,
        _shadow(raw),
        _audit(raw, base),
        call_approvals=_call_approvals(raw),
    )


def _shadow(raw: Mapping[str, Any]) -> ShadowSettings:
    if "shadow" not in raw:
        return ShadowSettings()
    table = _table(raw, "shadow")
    return ShadowSettings(
        sample_rate=_float(table, "shadow.sample_rate", 0.0, low=0.0, high=1.0),
        max_wait_s=_float(table, "shadow.max_wait_s", 0.05, low=0.0, high=10.0),
    )


def _call_approvals(raw: Mapping[str, Any]) -> CallApprovalSettings:
    if "call_approvals" not in raw:
        return CallApprovalSettings()
    table = _table(raw, "call_approvals")
    return CallApprovalSettings(
        ttl_s=_int(table, "call_approvals.ttl_s", 3600, low=1, high=7 * 86400),
        max_pending_per_caller=_int(
            table, "call_approvals.max_pending_per_caller", 20, low=1, high=10_000
        ),
    )


def _admin(raw: Mapping[str, Any], base: Path) -> AdminSettings | None:
    if "admin" not in raw:
        return None
    table = _table(raw, "admin")
    if not table.get("token_file"):
        raise ConfigError(
            "admin.token_file must name the file holding the admin API's bearer token;"
            " the admin API is never served without one (remove [admin] to turn it off)"
        )
    listen = Address.parse(_str(table, "admin.listen", "127.0.0.1:8081"), "admin.listen", base)
    return AdminSettings(
        listen=listen,
        token_file=_path(_str(table, "admin.token_file"), base),
        oidc=_oidc(table["oidc"], base, listen) if "oidc" in table else None,
    )


def _oidc(table: Any, base: Path, listen: Address) -> OidcSettings:
    if not isinstance(table, dict):
        raise ConfigError("[admin.oidc] must be a table")
    loopback_ok = _bool(table, "admin.oidc.allow_http_loopback", False)
    issuer = _str(table, "admin.oidc.issuer").rstrip("/")
    _check_url(issuer, "admin.oidc.issuer", loopback_ok, what="the identity provider")
    # Browsers reach the listener directly unless told otherwise (e.g. behind a proxy).
    default_url = None if listen.uds else f"http://{listen.host_port}"
    console_url = _str(table, "admin.oidc.console_url", default_url).rstrip("/")
    _check_url(console_url, "admin.oidc.console_url", loopback_ok, what="the console")
    if urllib.parse.urlsplit(console_url).path:
        raise ConfigError(
            f"admin.oidc.console_url = {console_url!r}: give the origin only, e.g."
            " 'https://regate-admin.example.com' (the console lives at /admin)"
        )
    admin_groups = _strings(table, "admin.oidc.admin_groups")
    viewer_groups = _strings(table, "admin.oidc.viewer_groups")
    if not admin_groups and not viewer_groups:
        raise ConfigError(
            "admin.oidc: list admin_groups and/or viewer_groups; with neither nobody could"
            " sign in (an empty list never means everyone)"
        )
    scopes = _strings(table, "admin.oidc.scopes") or ("openid", "profile", "email", "groups")
    if "openid" not in scopes:
        raise ConfigError("admin.oidc.scopes must include 'openid'")
    algorithms = _strings(table, "admin.oidc.id_token_algorithms") or ("RS256", "ES256")
    bad = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
    if bad:
        raise ConfigError(
            f"admin.oidc.id_token_algorithms: {bad} not allowed; use {sorted(SUPPORTED_ALGORITHMS)}"
        )
    idle = _int(table, "admin.oidc.session_idle_s", 1800, low=60, high=86400)
    lifetime = _int(table, "admin.oidc.session_max_s", 8 * 3600, low=60, high=30 * 86400)
    if idle > lifetime:
        raise ConfigError("admin.oidc.session_idle_s must not exceed admin.oidc.session_max_s")
    return OidcSettings(
        issuer=issuer,
        client_id=_str(table, "admin.oidc.client_id"),
        client_secret_file=_path(_str(table, "admin.oidc.client_secret_file"), base),
        console_url=console_url,
        cookie_secret_file=_path(_str(table, "admin.oidc.cookie_secret_file"), base),
        admin_groups=admin_groups,
        viewer_groups=viewer_groups,
        groups_claim=_str(table, "admin.oidc.groups_claim", "groups"),
        scopes=scopes,
        id_token_algorithms=algorithms,
        session_idle_s=idle,
        session_max_s=lifetime,
        timeout_s=_float(table, "admin.oidc.timeout_s", 10.0, low=0.1, high=120),
    )


def _check_url(url: str, key: str, allow_http_loopback: bool, *, what: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.query or parsed.fragment or parsed.username:
        raise ConfigError(f"{key} = {url!r}: no query, fragment or user info")
    if parsed.scheme == "https" and parsed.hostname:
        return
    loopback = parsed.hostname in ("127.0.0.1", "::1", "localhost")
    if parsed.scheme == "http" and loopback and allow_http_loopback:
        return
    raise ConfigError(
        f"{key} = {url!r}: {what} must be reached over https:// (plain http only for a"
        " loopback host, with allow_http_loopback = true)"
    )


def _audit(raw: Mapping[str, Any], base: Path) -> AuditSettings:
    if "audit" not in raw:
        return AuditSettings()
    table = _table(raw, "audit")
    store = _choice(table, "audit.store", "sqlite", ("sqlite", "postgres"))
    if store == "sqlite":
        return AuditSettings()
    dsn = table.get("dsn")
    if not isinstance(dsn, str) or not dsn:
        raise ConfigError(
            "audit.dsn is required with audit.store = 'postgres', e.g."
            " 'host=db.internal port=5432 dbname=regate user=regate'"
        )
    _check_dsn(dsn)
    if table.get("password_file") and table.get("password_env"):
        raise ConfigError("[audit]: give at most one of password_file and password_env")
    return AuditSettings(
        store=store,
        dsn=dsn,
        password_file=(
            _path(_str(table, "audit.password_file"), base) if table.get("password_file") else None
        ),
        password_env=_str(table, "audit.password_env") if table.get("password_env") else None,
        timeout_s=_float(table, "audit.timeout_s", 5.0, low=0.1, high=300),
    )


def _check_dsn(dsn: str) -> None:
    # libpq's own parser, so what is checked is what will be used. Its messages can
    # quote the string, so they are not passed on: the DSN may hold a secret by mistake.
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        raise ConfigError(
            "audit.dsn is not a valid libpq connection string: use key=value pairs"
            " ('host=db port=5432 dbname=regate user=regate') or a postgresql:// URI"
        ) from None
    if params.get("password"):
        raise ConfigError(
            "audit.dsn must not hold the password (it would reach logs and process lists):"
            " put it in a file named by audit.password_file, or in the environment variable"
            " named by audit.password_env"
        )


def _bool(table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key.rpartition(".")[2], default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false")
    return value


def _issuer(entry: Any, index: int, base: Path) -> IssuerSettings:
    key = f"issuers[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{key} must be a table")
    algorithms = entry.get("algorithms")
    if not isinstance(algorithms, list) or not algorithms:
        raise ConfigError(f"{key}.algorithms: list the allowed algorithms, e.g. ['ES256']")
    bad = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
    if bad:
        raise ConfigError(
            f"{key}.algorithms: {bad} not allowed; use {sorted(SUPPORTED_ALGORITHMS)}"
        )
    has_file, has_url = bool(entry.get("jwks_file")), bool(entry.get("jwks_url"))
    if has_file == has_url:
        raise ConfigError(f"{key}: give exactly one of jwks_file and jwks_url")
    url = _str(entry, f"{key}.jwks_url") if has_url else None
    if url is not None:
        _check_jwks_url(url, f"{key}.jwks_url", bool(entry.get("allow_http_loopback", False)))
    typ = entry.get("typ")
    if typ is not None and (not isinstance(typ, str) or not typ):
        raise ConfigError(f"{key}.typ must be a non-empty string")
    require_jti = entry.get("require_jti", False)
    if not isinstance(require_jti, bool):
        raise ConfigError(f"{key}.require_jti must be true or false")
    return IssuerSettings(
        issuer=_str(entry, f"{key}.issuer"),
        jwks_file=_path(_str(entry, f"{key}.jwks_file"), base) if has_file else None,
        algorithms=tuple(algorithms),
        jwks_url=url,
        jwks_refresh_s=_float(entry, f"{key}.jwks_refresh_s", 300.0, low=1, high=86400),
        jwks_cooldown_s=_float(entry, f"{key}.jwks_cooldown_s", 30.0, low=0.1, high=3600),
        jwks_max_stale_s=_float(entry, f"{key}.jwks_max_stale_s", 3600.0, low=1, high=604800),
        typ=typ,
        max_token_age_s=_int(entry, f"{key}.max_token_age_s", 86400, low=1, high=30 * 86400),
        require_jti=require_jti,
    )


def _check_jwks_url(url: str, key: str, allow_http_loopback: bool) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    loopback = parsed.hostname in ("127.0.0.1", "::1", "localhost")
    if parsed.scheme == "http" and loopback and allow_http_loopback:
        return
    raise ConfigError(
        f"{key} = {url!r}: keys must come over https:// (plain http only for a loopback"
        " host, with allow_http_loopback = true)"
    )


def _table(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name)
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] section is missing")
    return value


def _str(table: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = table.get(key.rpartition(".")[2], default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string")
    return value


def _strings(table: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = table.get(key.rpartition(".")[2], [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be a list of non-empty strings")
    return tuple(value)


def _networks(table: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = _strings(table, key)
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{key}: {value!r} is not an IP address or CIDR block") from exc
    return values


def _choice(table: Mapping[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = table.get(key.rpartition(".")[2], default)
    if value not in choices:
        raise ConfigError(f"{key} must be one of {list(choices)}, not {value!r}")
    return str(value)


def _int(table: Mapping[str, Any], key: str, default: int, *, low: int, high: int) -> int:
    value = table.get(key.rpartition(".")[2], default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key} must be an integer between {low} and {high}")
    return value


def _float(table: Mapping[str, Any], key: str, default: float, *, low: float, high: float) -> float:
    value = table.get(key.rpartition(".")[2], default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{key} must be a number between {low} and {high}")
    return float(value)


def _path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()
