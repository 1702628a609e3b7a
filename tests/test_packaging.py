"""The wheel must contain every package and the shipped tokenizer assets (non-editable installs)."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("dataprep", "trainer")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert config["package-dir"]["dataprep._assets"] == "tokenizer_assets"


def test_shipped_assets_are_covered_by_package_data():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["dataprep._assets"]
    assets = REPO / "tokenizer_assets"
    files = [p.relative_to(assets) for p in assets.rglob("*") if p.is_file()]
    assert files
    uncovered = [f for f in files if not any(f.match(pattern) for pattern in patterns)]
    assert not uncovered, f"tokenizer assets missing from package-data: {uncovered}"
