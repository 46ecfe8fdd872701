from __future__ import annotations

import time

import jwt
import pytest

from rooms.errors import DomainError
from rooms.roles import Grant, Role
from signaling import tokens
from tests.support import SECRET


def test_round_trip() -> None:
    token = tokens.mint(SECRET, room="or-7", role=Role.EXPERT, name="Dr Wang", identity="wang")
    claims = tokens.verify(SECRET, token)
    assert claims.room == "or-7" and claims.identity == "wang" and claims.name == "Dr Wang"
    assert claims.role is Role.EXPERT
    assert claims.allows(Grant.ANNOTATE) and not claims.allows(Grant.PUBLISH_VIDEO)
    assert claims.expires_at == pytest.approx(time.time() + 7200, abs=5)
    raw = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert raw["iss"] == "orbridge" and raw["sub"] == "wang" and raw["role"] == "expert"


def test_optional_grant_within_the_ceiling() -> None:
    token = tokens.mint(SECRET, "r", Role.EXPERT, "Dr Wang", extra_grants={Grant.PUBLISH_VIDEO})
    assert tokens.verify(SECRET, token).allows(Grant.PUBLISH_VIDEO)
    with pytest.raises(ValueError, match="cannot be given"):
        tokens.mint(SECRET, "r", Role.TRAINEE, "T", extra_grants={Grant.ANNOTATE})


def test_generated_identity() -> None:
    claims = tokens.verify(SECRET, tokens.mint(SECRET, "r", Role.DEVICE, "Monitor 3"))
    assert claims.identity.startswith("device-")


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"room": "has space"}, "room"),
        ({"room": ""}, "room"),
        ({"room": "x" * 65}, "room"),
        ({"identity": "../../x"}, "identity"),
        ({"name": ""}, "display name"),
        ({"name": "a\nb"}, "display name"),
    ],
)
def test_mint_validates(kwargs: dict[str, str], problem: str) -> None:
    args = {"room": "r", "role": Role.EXPERT, "name": "Dr Wang"} | kwargs
    with pytest.raises(ValueError, match=problem):
        tokens.mint(SECRET, **args)  # type: ignore[arg-type]


def codes(token: object, room: str | None = None) -> str:
    with pytest.raises(DomainError) as err:
        tokens.verify(SECRET, token, room=room)
    return err.value.code


def test_refusals() -> None:
    good = tokens.mint(SECRET, "r", Role.EXPERT, "E")
    assert codes(None) == "token_missing"
    assert codes("") == "token_missing"
    assert codes("x" * 5000) == "token_invalid"
    assert codes(good, room="other") == "token_wrong_room"
    assert (
        codes(tokens.mint("other-secret-0123456789-abcdefghijkl", "r", Role.EXPERT, "E"))
        == "token_invalid"
    )
    assert codes(tokens.mint(SECRET, "r", Role.EXPERT, "E", ttl_s=10, now=time.time() - 100)) == (
        "token_expired"
    )
    payload = jwt.decode(good, options={"verify_signature": False})
    for change in ({"role": "janitor"}, {"grants": ["fly"]}, {"room": "a b"}, {"iss": "evil"}):
        assert codes(jwt.encode(payload | change, SECRET, algorithm="HS256")) == "token_invalid"
    missing = {k: v for k, v in payload.items() if k != "exp"}
    assert codes(jwt.encode(missing, SECRET, algorithm="HS256")) == "token_invalid"
    assert codes(jwt.encode(payload, SECRET * 2, algorithm="HS512")) == "token_invalid"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400)]
)
def test_parse_ttl(text: str, seconds: int) -> None:
    assert tokens.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "2w", "8d", "abc"])
def test_parse_ttl_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        tokens.parse_ttl(text)


def test_join_url_keeps_the_token_in_the_fragment() -> None:
    url = tokens.join_url("http://h:8080/", "or-1", "abc.def.ghi")
    assert url == "http://h:8080/room/or-1#token=abc.def.ghi"
