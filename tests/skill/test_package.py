"""SKILL.md parsing and package checks: front matter, paths, limits, and hostile zips."""

from __future__ import annotations

import io
import zipfile

import pytest

from lunogen.skill import package
from lunogen.skill.package import PackageError, UploadTooLargeError
from tests.agent.support import Dev
from tests.helpers import Api
from tests.skill.support import fields, make_zip, skill_md, upload_zip


def _error(skill: str, files: dict[str, str] | None = None) -> tuple[str, str]:
    with pytest.raises(PackageError) as caught:
        package.from_json(skill, files or {})
    detail = caught.value.extra["details"][0]
    return detail["field"], detail["message"]


def test_a_full_front_matter_is_kept() -> None:
    parsed = package.from_json(
        skill_md(
            extra="license: Apache-2.0\ncompatibility: Python 3.11\n"
            "metadata:\n  author: ada\n  version: '1.2'\nallowed-tools: Bash Read\n"
        ),
        {},
    )
    assert parsed.front_matter == {
        "name": "pdf-tools",
        "description": parsed.description,
        "license": "Apache-2.0",
        "compatibility": "Python 3.11",
        "metadata": {"author": "ada", "version": "1.2"},
        "allowed-tools": ["Bash", "Read"],
    }
    assert parsed.body.startswith("# PDF tools")


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("---\ndescription: d\n---\nbody", "skill_md.name", "required"),
        ("---\nname: x\n---\nbody", "skill_md.description", "required"),
        ("---\nname: PDF_Tools\ndescription: d\n---\n", "skill_md.name", "lowercase"),
        ("---\nname: -pdf\ndescription: d\n---\n", "skill_md.name", "hyphen"),
        ("---\nname: pdf-\ndescription: d\n---\n", "skill_md.name", "hyphen"),
        ("---\nname: pdf--tools\ndescription: d\n---\n", "skill_md.name", "hyphen"),
        (f"---\nname: {'a' * 65}\ndescription: d\n---\n", "skill_md.name", "64"),
        ("---\nname: 2024\ndescription: d\n---\n", "skill_md.name", "string"),
        ("---\nname: ok\ndescription: ''\n---\n", "skill_md.description", "empty"),
        (f"---\nname: ok\ndescription: {'d' * 1025}\n---\n", "skill_md.description", "1024"),
        ("---\nname: ok\ndescription: d\nauthor: me\n---\n", "skill_md.author", "unknown"),
        ("---\nname: ok\ndescription: d\nmetadata: [1]\n---\n", "skill_md.metadata", "map"),
        ("---\nname: ok\ndescription: d\nmetadata: {v: 1}\n---\n", "skill_md.metadata.v", "string"),
        (
            "---\nname: ok\ndescription: d\nallowed-tools: 3\n---\n",
            "skill_md.allowed-tools",
            "list",
        ),
        ("name: ok\ndescription: d\n", "skill_md", "---"),
        ("---\nname: ok\ndescription: d\n", "skill_md", "closing"),
        ("---\nname: [unclosed\n---\n", "skill_md", "YAML"),
        ("---\n- a\n- b\n---\n", "skill_md", "mapping"),
        ("---\nname: ok\ndescription: d\n---\nnul \x00 here", "skill_md", "NUL"),
    ],
)
def test_bad_front_matter_names_the_field(text: str, field: str, words: str) -> None:
    got_field, message = _error(text)
    assert got_field == field
    assert words in message


def test_unknown_keys_are_all_named() -> None:
    _, message = _error("---\nname: ok\ndescription: d\nauthor: me\ntags: [a]\n---\n")
    assert "'author', 'tags'" in message and "metadata" in message


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("../evil.py", ".."),
        ("scripts/../../evil.py", ".."),
        ("/etc/passwd", "absolute"),
        ("C:/evil.py", "absolute"),
        ("scripts\\evil.py", "backslash"),
        ("scripts/a\x00.py", "control"),
        ("scripts/a\u202e.py", "control"),
        ("README.md", "under scripts/"),
        ("scripts", "under scripts/"),
        ("bin/run.sh", "under scripts/"),
        ("scripts/" + "a/" * 9 + "x.py", "deep"),
        ("scripts/" + "a" * 200 + ".py", "200"),
    ],
)
def test_bad_paths_are_refused(path: str, words: str) -> None:
    field, message = _error(skill_md(), {path: "x"})
    assert field.startswith("files")
    assert words in message


def test_paths_are_normalised_and_duplicates_refused() -> None:
    parsed = package.from_json(skill_md(), {"./scripts//a.py": "x", "references/./b.md": "y"})
    assert set(parsed.files) == {"scripts/a.py", "references/b.md"}
    field, message = _error(skill_md(), {"scripts/a.py": "x", "scripts/./a.py": "y"})
    assert (field, "duplicate" in message) == ("files.scripts/a.py", True)
    _, message = _error(skill_md(), {"scripts/A.py": "x", "scripts/a.py": "y"})
    assert "duplicate" in message
    _, message = _error(skill_md(), {"scripts/a": "x", "scripts/a/b.py": "y"})
    assert "both a file and a folder" in message


def test_size_and_count_limits() -> None:
    too_many = {f"scripts/s{i}.py": "x" for i in range(package.MAX_FILES + 1)}
    assert _error(skill_md(), too_many)[0] == "files"
    big = "x" * (package.MAX_FILE_BYTES + 1)
    assert _error(skill_md(), {"assets/big.txt": big}) == (
        "files.assets/big.txt",
        f"each file must be at most {package.MAX_FILE_BYTES} bytes",
    )
    chunk = "x" * package.MAX_FILE_BYTES
    over_total = {f"assets/{i}.txt": chunk for i in range(3)}
    field, message = _error(skill_md(), over_total)
    assert field == "files" and "whole skill" in message
    huge_md = skill_md(body="x" * package.MAX_SKILL_MD_BYTES)
    assert _error(huge_md)[0] == "skill_md"


# -- zips ----------------------------------------------------------------------------------


def _zip_error(data: bytes) -> tuple[str, str]:
    with pytest.raises(PackageError) as caught:
        package.from_zip(data)
    detail = caught.value.extra["details"][0]
    return detail["field"], detail["message"]


def test_zip_slip_names_are_refused_before_reading() -> None:
    for name in ("../evil", "pdf/../../evil", "/abs/SKILL.md", "scripts\\x.py"):
        field, _ = _zip_error(make_zip({"SKILL.md": skill_md(), name: "boom"}))
        assert field.startswith("files."), name


def test_nul_in_a_zip_name_is_refused() -> None:
    data = make_zip({"SKILL.md": skill_md(), "scripts/aXb.py": "x"})
    data = data.replace(b"scripts/aXb.py", b"scripts/a\x00b.py")
    assert "NUL" in _zip_error(data)[1]


def test_symlink_entries_are_refused() -> None:
    data = make_zip({"SKILL.md": skill_md()}, symlinks={"scripts/link": "/etc/shadow"})
    field, message = _zip_error(data)
    assert (field, "symlink" in message) == ("files.scripts/link", True)


def test_zip_without_skill_md_or_with_two_top_folders() -> None:
    assert "SKILL.md not found" in _zip_error(make_zip({"scripts/a.py": "x"}))[1]
    two = make_zip({"a/SKILL.md": skill_md(), "b/scripts/x.py": "x"})
    assert "SKILL.md not found" in _zip_error(two)[1]


def test_not_a_zip_and_too_large() -> None:
    assert _zip_error(b"PK\x03\x04 not really")[1] == "not a valid zip archive"
    with pytest.raises(UploadTooLargeError):
        package.from_zip(b"0" * (package.MAX_ZIP_BYTES + 1))


def test_zip_bomb_is_refused_by_declared_size() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("SKILL.md", skill_md())
        archive.writestr("assets/zeros.bin", b"\0" * (package.MAX_PACKAGE_BYTES + 1))
    assert len(buffer.getvalue()) < 100_000
    field, message = _zip_error(buffer.getvalue())
    assert field.startswith("files") or field == "file"
    assert "too large" in message or "at most" in message


def test_zip_bomb_that_lies_about_its_size_stops_while_inflating() -> None:
    buffer = io.BytesIO()
    payload = b"\0" * (2 * 1024 * 1024)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("SKILL.md", skill_md())
        archive.writestr("assets/small.bin", payload)
    data = bytearray(buffer.getvalue())
    # Rewrite the declared uncompressed size (local header and central directory) to 10 bytes.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (found := data.find(signature, start)) >= 0:
            name_offset = 30 if signature == b"PK\x03\x04" else 46
            if data[found + name_offset : found + name_offset + 16] == b"assets/small.bin":
                data[found + offset : found + offset + 4] = (10).to_bytes(4, "little")
            start = found + 4
    _, message = _zip_error(bytes(data))
    assert "declared size" in message or "CRC" in message  # zipfile stops at the declared size


def test_an_entry_in_an_unsupported_compression_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("SKILL.md", skill_md())
        archive.writestr("assets/data.bin", b"payload")
    data = bytearray(buffer.getvalue())
    # Mark the asset as Deflate64 (method 9), which zipfile cannot inflate.
    for signature, offset, name_offset in ((b"PK\x03\x04", 8, 30), (b"PK\x01\x02", 10, 46)):
        start = 0
        while (found := data.find(signature, start)) >= 0:
            if data[found + name_offset : found + name_offset + 15] == b"assets/data.bin":
                data[found + offset : found + offset + 2] = (9).to_bytes(2, "little")
            start = found + 4
    _, message = _zip_error(bytes(data))
    assert message == "'assets/data.bin' uses an unsupported compression"


def test_too_many_entries() -> None:
    entries: dict[str, bytes | str] = {"SKILL.md": skill_md()}
    entries.update({f"scripts/{i}.py": "x" for i in range(package.MAX_FILES + 1)})
    field, _ = _zip_error(make_zip(entries))
    assert field == "files"


async def test_zip_problems_answer_422_through_the_api(dev_api: tuple[Api, Dev]) -> None:
    api, dev = dev_api
    evil = await upload_zip(dev, make_zip({"SKILL.md": skill_md(), "../evil": "x"}))
    assert list(fields(evil)) == ["files.../evil"]
    absolute = await upload_zip(dev, make_zip({"SKILL.md": skill_md(), "/etc/x": "x"}))
    assert "absolute" in fields(absolute)["files./etc/x"]
    link = await upload_zip(dev, make_zip({"SKILL.md": skill_md()}, symlinks={"scripts/l": "/"}))
    assert "symlink" in fields(link)["files.scripts/l"]
    many = {f"scripts/{i}.py": "x" for i in range(package.MAX_FILES + 1)}
    assert "files" in fields(await upload_zip(dev, make_zip({"SKILL.md": skill_md(), **many})))
    large = await upload_zip(dev, b"0" * (package.MAX_ZIP_BYTES + 1))
    assert large.status_code == 413
    bad_name = await upload_zip(dev, make_zip({"SKILL.md": skill_md(name="Bad_Name")}))
    assert "skill_md.name" in fields(bad_name)
    from tests.agent.support import raw_rows

    assert await raw_rows(api, "select id from skills") == []


async def test_json_problems_answer_422_through_the_api(dev_api: tuple[Api, Dev]) -> None:
    _, dev = dev_api
    cases = {
        "---\ndescription: d\n---\n": "skill_md.name",
        "---\nname: Bad\ndescription: d\n---\n": "skill_md.name",
        "---\nname: ok\n---\n": "skill_md.description",
        "---\nname: ok\ndescription: d\nversion: 2\n---\n": "skill_md.version",
    }
    for text, field in cases.items():
        response = await dev.http.post("/api/v1/skills", json={"skill_md": text})
        assert field in fields(response), text
    slip = await dev.http.post(
        "/api/v1/skills", json={"skill_md": skill_md(), "files": {"../evil": "x"}}
    )
    assert list(fields(slip)) == ["files.../evil"]
