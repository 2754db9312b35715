"""The shipped paper datasets are the files dataset/README.md describes, and the converter
makes each of them from its S3-Rec source byte for byte."""

import hashlib
import re

import pytest

from recbole_recgpt.convert import convert
from tests.conftest import DATASETS

SOURCES = {
    "amazon-beauty": "Beauty.txt",
    "amazon-sports": "Sports_and_Outdoors.txt",
    "amazon-toys": "Toys_and_Games.txt",
    "yelp": "Yelp.txt",
}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listed_checksums():
    """``{relative path: sha256}`` from the tables of dataset/README.md."""
    text = (DATASETS / "README.md").read_text()
    return dict(re.findall(r"^\| `([^`]+)` \|.*`([0-9a-f]{64})` \|$", text, flags=re.M))


def test_the_readme_lists_every_shipped_file():
    shipped = {
        str(path.relative_to(DATASETS)) for path in DATASETS.rglob("*") if path.suffix in (".inter", ".txt")
    }
    assert set(listed_checksums()) == shipped == {
        *(f"{name}/{name}.inter" for name in SOURCES), *(f"s3rec-raw/{raw}" for raw in SOURCES.values())
    }


@pytest.mark.parametrize("path", sorted(listed_checksums()))
def test_each_file_has_its_listed_sha256(path):
    assert sha256(DATASETS / path) == listed_checksums()[path]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_converter_remakes_each_inter_file_from_its_source(name, tmp_path):
    written = convert(DATASETS / "s3rec-raw" / SOURCES[name], tmp_path, name)
    assert sha256(written) == sha256(DATASETS / name / f"{name}.inter")
