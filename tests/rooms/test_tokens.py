from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest

from orbridge.rooms import tokens
from orbridge.rooms.errors import DomainError
from orbridge.rooms.roles import Grant, Role
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
        ({"name": "a\x07b"}, "display name"),  # a control character (a newline is a space)
        ({"name": "Dr\u202eWang"}, "display name"),  # a bidi override
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


def test_library_token() -> None:
    token = tokens.mint(SECRET, tokens.LIBRARY_ROOM, Role.TRAINEE, "Trainee Li",
                        library=["or-*", "icu-?", "or-*"])  # fmt: skip
    claims = tokens.verify(SECRET, token)
    assert claims.library == ("or-*", "icu-?")
    # It opens recordings and nothing else, whatever the role's live grants.
    assert claims.grants == {Grant.VIEW_RECORDINGS}
    raw = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert raw["library"] == ["or-*", "icu-?"] and raw["room"] == "library"
    # A join token has none.
    assert tokens.verify(SECRET, tokens.mint(SECRET, "or-1", Role.TRAINEE, "T")).library == ()


def test_library_token_cannot_join_a_room() -> None:
    token = tokens.mint(SECRET, tokens.LIBRARY_ROOM, Role.MODERATOR, "M", library=["or-1"])
    for room in ("or-1", "library", "other"):
        with pytest.raises(DomainError, match="a library token cannot join a room") as err:
            tokens.verify(SECRET, token, room=room)
        assert err.value.code == "token_invalid"


@pytest.mark.parametrize(
    ("library", "role", "extra"),
    [
        ([], Role.TRAINEE, None),
        ([f"or-{i}" for i in range(17)], Role.TRAINEE, None),
        (["or 1"], Role.TRAINEE, None),
        (["../x"], Role.TRAINEE, None),
        (["-or"], Role.TRAINEE, None),
        (["x" * 65], Role.TRAINEE, None),
        (["or-[12]"], Role.TRAINEE, None),
        ("or-*", Role.TRAINEE, None),  # a string, not a list of globs
        (["or-*"], Role.DEVICE, None),  # a device never sees recordings
        (["or-*"], Role.EXPERT, {Grant.ANNOTATE}),  # a library token opens recordings only
    ],
)
def test_library_token_validation(library: object, role: Role, extra: set[Grant] | None) -> None:
    with pytest.raises(ValueError):
        tokens.mint(SECRET, "library", role, "N", library=library, extra_grants=extra)  # type: ignore[arg-type]


def test_forged_library_claim_is_refused() -> None:
    payload = jwt.decode(
        tokens.mint(SECRET, "r", Role.TRAINEE, "T"), options={"verify_signature": False}
    )
    for bad in ([], ["a b"], "or-*", [1], ["*"] * 17):
        forged = jwt.encode(payload | {"library": bad}, SECRET, algorithm="HS256")
        assert codes(forged) == "token_invalid"


def test_library_url() -> None:
    assert tokens.library_url("http://h:8080/", "a.b.c") == "http://h:8080/recordings#token=a.b.c"


def test_cli_mints_a_library_token(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from orbridge.signaling.cli.main import main

    args = ["token", "--secret", SECRET, "--data-dir", str(tmp_path), "--role", "trainee",
            "--name", "Li", "--library", "or-*", "--library", "icu-1", "--json"]  # fmt: skip
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    claims = tokens.verify(SECRET, printed["token"])
    assert claims.library == ("or-*", "icu-1") and claims.role is Role.TRAINEE
    assert printed["url"].endswith(f"/recordings#token={printed['token']}")
    # --room and --library are one or the other; a device gets no library token.
    with pytest.raises(SystemExit):
        main(["token", "--secret", SECRET, "--role", "trainee", "--name", "T", "--room", "r",
              "--library", "or-*"])  # fmt: skip
    assert main(["token", "--secret", SECRET, "--data-dir", str(tmp_path), "--role", "device",
                 "--name", "D", "--library", "or-*"]) == 2  # fmt: skip
    assert "view_recordings" in capsys.readouterr().err
