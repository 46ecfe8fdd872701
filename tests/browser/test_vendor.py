"""static/vendor/ holds exactly what static/vendor/VERSIONS pins (scripts/vendor.sh)."""

from __future__ import annotations

from orbridge.signaling.web.pages import STATIC_DIR


def test_vendored_files_match_the_manifest() -> None:
    manifest = STATIC_DIR / "vendor" / "VERSIONS"
    lines = [
        line.split()
        for line in manifest.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    names = {parts[0] for parts in lines}
    assert "socket.io-client" in names
    for name, version, integrity, *files in lines:
        folder = STATIC_DIR / "vendor" / name
        assert (folder / "PACKAGE").read_text().split() == [f"{name}@{version}", integrity]
        kept = sorted(p.name for p in folder.iterdir())
        assert kept == sorted([*(f.rsplit("/", 1)[-1] for f in files), "PACKAGE"])
    bundle = STATIC_DIR / "vendor" / "socket.io-client" / "socket.io.esm.min.js"
    version = next(parts[1] for parts in lines if parts[0] == "socket.io-client")
    assert f"Socket.IO v{version}" in bundle.read_text()[:200]
