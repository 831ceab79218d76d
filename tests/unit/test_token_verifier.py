"""Bearer tokens: `gateway.auth.TokenVerifier` over `regate.crypto`.

Two trusted issuers, A and B, each with its own ES256 key. Every row of the attack
table is a header a client could send; each must be refused with the named check.
Hand-built tokens are signed for real (ES256 via `cryptography`, HS256 via `hmac`)
so that the only thing wrong with them is the thing the row is about.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.auth import Caller, ReplayCache, TokenVerifier, TrustedIssuer
from gateway.errors import InvalidToken, MissingToken
from gateway.jwks import StaticKeys
from regate import crypto

AUDIENCE = "regate"
LEEWAY_S = 5
ISSUER_A = "https://a.issuer.test"
ISSUER_B = "https://b.issuer.test"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def es256_sign(signing_input: bytes, private: crypto.Jwk) -> bytes:
    """A JWS ES256 signature (raw r || s) made without the JOSE library."""
    secret = int.from_bytes(b64url_decode(private["d"]), "big")
    key = ec.derive_private_key(secret, ec.SECP256R1())
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def hand_built(
    header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]
) -> str:
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def authenticate(verifier: TokenVerifier, authorization: str | None) -> Caller:
    return asyncio.run(verifier.authenticate(authorization))


@dataclass(frozen=True)
class World:
    verifier: TokenVerifier
    key_a: crypto.Jwk  # private, kid "a-key", trusted for ISSUER_A only
    public_a: crypto.Jwk
    key_b: crypto.Jwk  # private, kid "b-key", trusted for ISSUER_B only
    now: int

    def claims(self, **changes: Any) -> dict[str, Any]:
        """Good claims for issuer A; a change to None drops the claim."""
        base: dict[str, Any] = {
            "iss": ISSUER_A,
            "sub": "alice",
            "aud": AUDIENCE,
            "iat": self.now,
            "exp": self.now + 300,
        }
        merged = {**base, **changes}
        return {k: v for k, v in merged.items() if v is not None}

    def token(self, key: crypto.Jwk | None = None, **changes: Any) -> str:
        return crypto.sign_jwt(self.claims(**changes), key or self.key_a)

    def bearer(self, key: crypto.Jwk | None = None, **changes: Any) -> str:
        return f"Bearer {self.token(key, **changes)}"


def trusted_issuer(tmp_path: Path, issuer: str, public: crypto.Jwk, name: str) -> TrustedIssuer:
    jwks = tmp_path / f"{name}.jwks.json"
    crypto.write_jwks(jwks, [public])
    keys = StaticKeys(crypto.load_jwks(jwks))
    return TrustedIssuer(issuer=issuer, keys=keys, algorithms=("ES256", "RS256"))


@pytest.fixture
def world(tmp_path: Path) -> World:
    key_a, public_a = crypto.generate_ec_key("a-key")
    key_b, public_b = crypto.generate_ec_key("b-key")
    verifier = TokenVerifier(
        {
            ISSUER_A: trusted_issuer(tmp_path, ISSUER_A, public_a, "a"),
            ISSUER_B: trusted_issuer(tmp_path, ISSUER_B, public_b, "b"),
        },
        audience=AUDIENCE,
        leeway_s=LEEWAY_S,
    )
    return World(verifier, key_a, public_a, key_b, int(time.time()))


# --- attacks ---------------------------------------------------------------


def alg_none(w: World) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": "a-key"}
    return f"Bearer {b64url_json(header)}.{b64url_json(w.claims())}."


def hs256_with_public_key_as_secret(w: World) -> str:
    # Algorithm confusion: the verifier's own public key, as JSON, used as an HMAC key.
    secret = json.dumps(w.public_a).encode()
    header = {"alg": "HS256", "typ": "JWT", "kid": "a-key"}
    return "Bearer " + hand_built(
        header, w.claims(), lambda data: hmac.new(secret, data, hashlib.sha256).digest()
    )


def rs256_header_on_ec_key(w: World) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": "a-key"}
    return "Bearer " + hand_built(header, w.claims(), lambda data: es256_sign(data, w.key_a))


def missing_kid(w: World) -> str:
    header = {"alg": "ES256", "typ": "JWT"}
    return "Bearer " + hand_built(header, w.claims(), lambda data: es256_sign(data, w.key_a))


def unknown_kid(w: World) -> str:
    rogue, _ = crypto.generate_ec_key("rogue-key")
    return w.bearer(rogue)


def issuer_a_signed_by_b_key_named_a(w: World) -> str:
    # B's key, relabelled with A's kid: A's key set must be the only one consulted.
    return w.bearer({**w.key_b, "kid": "a-key"}, iss=ISSUER_A)


def issuer_a_with_b_kid(w: World) -> str:
    # A genuine signature by B's key, claiming to be from A: issuers are never merged.
    return w.bearer(w.key_b, iss=ISSUER_A)


def payload_edited_after_signing(w: World) -> str:
    header, _, signature = w.token().split(".")
    return f"Bearer {header}.{b64url_json(w.claims(sub='admin'))}.{signature}"


def oversized(w: World) -> str:
    return w.bearer(padding="x" * crypto.MAX_COMPACT_SIZE)


Case = Callable[[World], str | None]

REFUSED: list[Any] = [
    pytest.param(lambda w: w.bearer(exp=w.now - 60), InvalidToken, "expired", id="expired-beyond-leeway"),
    pytest.param(lambda w: w.bearer(nbf=w.now + 3600), InvalidToken, "nbf", id="nbf-in-future"),
    pytest.param(lambda w: w.bearer(aud="someone-else"), InvalidToken, "audience", id="wrong-aud"),
    pytest.param(lambda w: w.bearer(aud=None), InvalidToken, '"aud"', id="missing-aud"),
    pytest.param(lambda w: w.bearer(iss="https://evil.test"), InvalidToken, "not trusted", id="untrusted-iss"),
    pytest.param(lambda w: w.bearer(iss=None), InvalidToken, "not trusted", id="missing-iss"),
    pytest.param(lambda w: w.bearer(iss=[ISSUER_A]), InvalidToken, "not trusted", id="iss-not-a-string"),
    pytest.param(lambda w: w.bearer(exp=None), InvalidToken, "no 'exp' claim", id="missing-exp"),
    pytest.param(lambda w: w.bearer(sub=None), InvalidToken, '"sub"', id="missing-sub"),
    pytest.param(lambda w: w.bearer(sub=42), InvalidToken, "Subject must be a string", id="sub-not-a-string"),
    pytest.param(alg_none, InvalidToken, "'none' is not allowed", id="alg-none-unsigned"),
    pytest.param(hs256_with_public_key_as_secret, InvalidToken, "'HS256' is not allowed", id="hs256-public-key-as-hmac-secret"),
    pytest.param(rs256_header_on_ec_key, InvalidToken, "'RS256' does not match key 'a-key'", id="rs256-header-on-ec-key"),
    pytest.param(unknown_kid, InvalidToken, "'rogue-key' is not in the trusted key set", id="unknown-kid"),
    pytest.param(missing_kid, InvalidToken, "no 'kid'", id="missing-kid"),
    pytest.param(issuer_a_signed_by_b_key_named_a, InvalidToken, "Signature verification failed", id="issuer-a-signed-by-b-key-with-a-kid"),
    pytest.param(issuer_a_with_b_kid, InvalidToken, "'b-key' is not in the trusted key set", id="issuer-a-with-b-kid-never-merged"),
    pytest.param(payload_edited_after_signing, InvalidToken, "Signature verification failed", id="payload-edited-after-signing"),
    pytest.param(oversized, InvalidToken, f"the limit is {crypto.MAX_COMPACT_SIZE}", id="over-max-compact-size"),
    pytest.param(lambda w: "Bearer " + w.token().rsplit(".", 1)[0], InvalidToken, "three dot-separated parts", id="two-parts"),
    pytest.param(lambda w: f"Bearer {w.token()}.extra", InvalidToken, "three dot-separated parts", id="four-parts"),
    pytest.param(lambda w: "Bearer not-a-jwt", InvalidToken, "three dot-separated parts", id="one-part"),
    pytest.param(lambda w: "Bearer a.b.c", InvalidToken, "malformed token", id="garbage-three-parts"),
    pytest.param(lambda w: f"Basic {w.token()}", InvalidToken, "must be 'Bearer <JWT>'", id="basic-scheme"),
    pytest.param(lambda w: w.token(), InvalidToken, "must be 'Bearer <JWT>'", id="no-scheme"),
    pytest.param(lambda w: "Bearer ", InvalidToken, "must be 'Bearer <JWT>'", id="bearer-without-token"),
    pytest.param(lambda w: "", MissingToken, "Authorization: Bearer", id="empty-header"),
    pytest.param(lambda w: None, MissingToken, "Authorization: Bearer", id="no-header"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "error", "fragment"), REFUSED)
def test_refused(world: World, build: Case, error: type[InvalidToken], fragment: str) -> None:
    with pytest.raises(error) as caught:
        authenticate(world.verifier, build(world))
    assert type(caught.value) is error
    assert fragment in caught.value.message
    assert caught.value.status == 401


def test_refusal_does_not_echo_the_token(world: World) -> None:
    token = world.token(exp=world.now - 60)
    with pytest.raises(InvalidToken) as caught:
        authenticate(world.verifier, f"Bearer {token}")
    assert token not in caught.value.message
    assert token not in caught.value.headers["WWW-Authenticate"]


# --- accepted --------------------------------------------------------------


def test_valid_token_gives_the_caller(world: World) -> None:
    caller = authenticate(world.verifier, world.bearer())
    assert caller == Caller(sub="alice", iss=ISSUER_A, claims=world.claims())
    assert caller.act is None


def test_each_issuer_verifies_with_its_own_key(world: World) -> None:
    caller = authenticate(world.verifier, world.bearer(world.key_b, iss=ISSUER_B, sub="bob"))
    assert (caller.sub, caller.iss) == ("bob", ISSUER_B)


def test_hand_built_es256_token_is_accepted(world: World) -> None:
    # Control for the hand-built rows: the helper's signatures are genuine, so those
    # rows fail only on the header field they change.
    header = {"alg": "ES256", "typ": "JWT", "kid": "a-key"}
    token = hand_built(header, world.claims(), lambda data: es256_sign(data, world.key_a))
    assert authenticate(world.verifier, f"Bearer {token}").sub == "alice"


def test_scheme_is_case_insensitive(world: World) -> None:
    assert authenticate(world.verifier, f"bearer {world.token()}").sub == "alice"


def test_expired_within_leeway_is_accepted(world: World) -> None:
    caller = authenticate(world.verifier, world.bearer(exp=world.now - 2))
    assert caller.sub == "alice"


def test_nbf_within_leeway_is_accepted(world: World) -> None:
    assert authenticate(world.verifier, world.bearer(nbf=world.now + 2)).sub == "alice"


def test_act_claim_names_the_agent_acting_for_the_caller(world: World) -> None:
    act = {"sub": "agent:planner", "iss": ISSUER_A}
    assert authenticate(world.verifier, world.bearer(act=act)).act == act


@pytest.mark.parametrize(
    "act",
    [pytest.param("agent:planner", id="string"), pytest.param({"client": "x"}, id="no-sub")],
)
def test_malformed_act_is_not_surfaced(world: World, act: Any) -> None:
    assert authenticate(world.verifier, world.bearer(act=act)).act is None


def test_no_issuers_is_refused() -> None:
    with pytest.raises(ValueError, match="no trusted issuers"):
        TokenVerifier({}, audience=AUDIENCE, leeway_s=LEEWAY_S)


# --- JWKS loading ----------------------------------------------------------


def write(tmp_path: Path, keys: list[crypto.Jwk]) -> Path:
    path = tmp_path / "keys.jwks.json"
    crypto.write_jwks(path, keys)
    return path


def _public(kid: str) -> crypto.Jwk:
    return crypto.generate_ec_key(kid)[1]


BAD_JWKS: list[Any] = [
    pytest.param(lambda: [], "holds no usable signing key", id="empty-key-set"),
    pytest.param(lambda: [crypto.generate_ec_key("k")[0]], "'k' is private", id="private-key"),
    pytest.param(lambda: [{k: v for k, v in _public("k").items() if k != "kid"}], "needs a 'kid'", id="no-kid"),
    pytest.param(lambda: [{**_public("k"), "kid": ""}], "needs a 'kid'", id="empty-kid"),
    pytest.param(lambda: [{**_public("k"), "use": "enc"}], "holds no usable signing key", id="only-enc-keys"),
    pytest.param(lambda: [{**_public("k"), "alg": "HS256"}], "is for HS256", id="hmac-alg"),
    pytest.param(lambda: [{"kty": "oct", "k": "c2VjcmV0", "kid": "k"}], "unsupported kty 'oct'", id="symmetric-key"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "fragment"), BAD_JWKS)
def test_load_jwks_refuses(
    tmp_path: Path, keys: Callable[[], list[crypto.Jwk]], fragment: str
) -> None:
    with pytest.raises(crypto.CryptoError, match=fragment):
        crypto.load_jwks(write(tmp_path, keys()))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("{not json", "is not valid JSON", id="not-json"),
        pytest.param('[{"kid": "k"}]', "is not a JWKS document", id="no-keys-member"),
    ],
)
def test_load_jwks_refuses_malformed_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "keys.jwks.json"
    path.write_text(text)
    with pytest.raises(crypto.CryptoError, match=fragment):
        crypto.load_jwks(path)


def test_load_jwks_missing_file(tmp_path: Path) -> None:
    with pytest.raises(crypto.CryptoError, match="cannot read key file"):
        crypto.load_jwks(tmp_path / "absent.json")


def test_load_jwks_skips_encryption_keys(tmp_path: Path) -> None:
    signing = _public("sig-key")
    path = write(tmp_path, [{**_public("enc-key"), "use": "enc"}, signing])
    keys = crypto.load_jwks(path)
    assert dict(keys.keys) == {"sig-key": signing}
    with pytest.raises(crypto.CryptoError, match="'enc-key' is not in the trusted key set"):
        keys.get("enc-key")


# --- per-issuer policy: jti replay, typ, maximum age ---------------------------


def strict_verifier(world: World, **policy: Any) -> TokenVerifier:
    keys = StaticKeys(crypto.KeySet({"a-key": world.public_a}, "test"))
    issuer = TrustedIssuer(issuer=ISSUER_A, keys=keys, algorithms=("ES256",), **policy)
    return TokenVerifier({ISSUER_A: issuer}, audience=AUDIENCE, leeway_s=LEEWAY_S)


def test_required_jti_is_accepted_once(world: World) -> None:
    verifier = strict_verifier(world, require_jti=True)
    token = world.bearer(jti="token-1")
    assert authenticate(verifier, token).sub == "alice"
    with pytest.raises(InvalidToken, match="already used"):
        authenticate(verifier, token)
    assert authenticate(verifier, world.bearer(jti="token-2")).sub == "alice"


def test_required_jti_must_be_present(world: World) -> None:
    with pytest.raises(InvalidToken, match="must carry a 'jti'"):
        authenticate(strict_verifier(world, require_jti=True), world.bearer())


def test_replay_cache_refuses_rather_than_forgets_when_full() -> None:
    cache = ReplayCache(clock=lambda: 1000.0, max_entries=4)
    assert all(cache.first_use("iss", f"j{i}", 5000.0) for i in range(4))
    assert cache.first_use("iss", "j-new", 5000.0) is False  # full of live entries
    expired = ReplayCache(clock=lambda: 1000.0, max_entries=4)
    assert all(expired.first_use("iss", f"j{i}", 10.0) for i in range(4))
    assert expired.first_use("iss", "j-new", 5000.0) is True  # expired ones are dropped


def test_required_typ(world: World) -> None:
    verifier = strict_verifier(world, typ="at+jwt")
    with pytest.raises(InvalidToken, match="'at\\+jwt'"):
        authenticate(verifier, world.bearer())  # typ JWT
    token = crypto.sign_jwt(world.claims(), world.key_a, typ="at+jwt")
    assert authenticate(verifier, f"Bearer {token}").sub == "alice"


def test_maximum_token_age(world: World) -> None:
    verifier = strict_verifier(world, max_token_age_s=60)
    with pytest.raises(InvalidToken, match="more than 60 s ago"):
        authenticate(verifier, world.bearer(iat=world.now - 600))
    assert authenticate(verifier, world.bearer(iat=world.now - 30)).sub == "alice"
