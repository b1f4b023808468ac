"""The SKILL.md package format: parse and validate the front matter, the body and the files.

A package is `SKILL.md` (YAML front matter between `---` lines, then a Markdown body) plus
optional files under `scripts/`, `references/` and `assets/`. It arrives either as JSON text
(`skill_md` and `files`: path → UTF-8 text) or as a zip archive; both end up as a
`ParsedSkill`, or a `PackageError` naming the field or file at fault.
"""

from __future__ import annotations

import hashlib
import io
import re
import stat
import unicodedata
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import Node

from lunogen.errors import LunogenError, PayloadTooLargeError

MAX_SKILL_MD_BYTES = 256 * 1024
MAX_FRONT_MATTER_BYTES = 16 * 1024
# Valid front matter nests 3 deep (the mapping, `metadata`, its values). PyYAML composes nodes
# recursively, so thousands of levels end in RecursionError; deep flow collections (`[[[…`)
# also make its scanner quadratic, so they are refused before it runs.
MAX_FRONT_MATTER_DEPTH = 8
_MAX_BRACKET_DEPTH = 32
MAX_FILES = 100
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_PACKAGE_BYTES = 5 * 1024 * 1024  # SKILL.md and every file, uncompressed
MAX_PATH_CHARS = 200
MAX_PATH_DEPTH = 8
MAX_ZIP_BYTES = 5 * 1024 * 1024  # the uploaded archive itself
MAX_ZIP_ENTRIES = 300  # files and folders, before anything is read

NAME_MAX = 64
DESCRIPTION_MAX = 1024
LICENSE_MAX = 500
COMPATIBILITY_MAX = 500
METADATA_MAX_KEYS = 50
METADATA_VALUE_MAX = 1024
ALLOWED_TOOLS_MAX = 50

FILE_ROOTS = ("scripts", "references", "assets")
FRONT_MATTER_KEYS = ("name", "description", "license", "compatibility", "metadata", "allowed-tools")
NAME_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_TOOL_PATTERN = re.compile(r"^[A-Za-z0-9_.:()*,\- /]{1,200}$")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Archivers add these beside the real content; they are left out rather than refused.
_ARCHIVER_LITTER = ("__MACOSX/",)
_ARCHIVER_FILES = (".DS_Store",)


class PackageError(LunogenError):
    """422 naming the part of the package at fault (`field`: `skill_md.name`, `files.<path>`)."""

    status_code = 422
    error = "Validation failed"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            f"{field}: {message}", extra={"details": [{"field": field, "message": message}]}
        )


class UploadTooLargeError(PayloadTooLargeError):
    pass


@dataclass(frozen=True)
class ParsedSkill:
    name: str
    description: str
    front_matter: dict[str, Any]
    body: str
    skill_md: str
    files: dict[str, bytes]

    @property
    def size(self) -> int:
        return len(self.skill_md.encode()) + sum(len(c) for c in self.files.values())

    @property
    def sha256(self) -> str:
        """Hash of the whole package: SKILL.md, then each file by path, length-prefixed."""
        digest = hashlib.sha256()
        for path, content in [("SKILL.md", self.skill_md.encode()), *sorted(self.files.items())]:
            digest.update(f"{path}\0{len(content)}\0".encode())
            digest.update(content)
        return digest.hexdigest()


# -- SKILL.md ------------------------------------------------------------------------------


def _fm_error(key: str, message: str) -> PackageError:
    return PackageError(f"skill_md.{key}", message)


def split_front_matter(text: str) -> tuple[str, str]:
    """The YAML between the opening and closing `---` lines, and the body after them."""
    lines = text.split("\n")
    if not lines or lines[0].rstrip("\r ") != "---":
        raise PackageError("skill_md", "must start with a '---' line opening the YAML front matter")
    for index in range(1, len(lines)):
        if lines[index].rstrip("\r ") == "---":
            return "\n".join(lines[1:index]), "\n".join(lines[index + 1 :]).lstrip("\r\n")
    raise PackageError("skill_md", "the front matter has no closing '---' line")


def _string(front: dict[str, Any], key: str, *, maximum: int, required: bool) -> str | None:
    value = front.get(key)
    if value is None:
        if required:
            raise _fm_error(key, f"'{key}' is required")
        return None
    if not isinstance(value, str):
        raise _fm_error(key, f"'{key}' must be a string (quote it in YAML)")
    value = value.strip()
    if not value:
        raise _fm_error(key, f"'{key}' must not be empty")
    if len(value) > maximum:
        raise _fm_error(key, f"'{key}' must be at most {maximum} characters")
    return value


def _validate_name(name: str) -> None:
    if len(name) > NAME_MAX:
        raise _fm_error("name", f"'name' must be at most {NAME_MAX} characters")
    if not NAME_PATTERN.match(name):
        raise _fm_error(
            "name",
            "'name' may use only lowercase letters, digits and single hyphens, "
            "and must not start or end with a hyphen",
        )


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _fm_error("metadata", "'metadata' must be a map of string keys to string values")
    if len(value) > METADATA_MAX_KEYS:
        raise _fm_error("metadata", f"'metadata' may have at most {METADATA_MAX_KEYS} keys")
    clean: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > 100:
            raise _fm_error("metadata", "'metadata' keys must be strings of 1 to 100 characters")
        if not isinstance(item, str):
            raise _fm_error(
                f"metadata.{key}", "metadata values must be strings (quote numbers and dates)"
            )
        if len(item) > METADATA_VALUE_MAX:
            raise _fm_error(f"metadata.{key}", f"at most {METADATA_VALUE_MAX} characters")
        clean[key] = item
    return clean


def _allowed_tools(value: Any) -> list[str]:
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise _fm_error(
            "allowed-tools", "'allowed-tools' must be a space-separated string or a list of strings"
        )
    if len(items) > ALLOWED_TOOLS_MAX:
        raise _fm_error("allowed-tools", f"at most {ALLOWED_TOOLS_MAX} tools")
    for tool in items:
        if not _TOOL_PATTERN.match(tool):
            raise _fm_error("allowed-tools", f"invalid tool entry {tool[:50]!r}")
    return list(items)


def _too_deep() -> PackageError:
    return PackageError(
        "skill_md", f"the front matter nests deeper than {MAX_FRONT_MATTER_DEPTH} levels"
    )


def _bracket_depth(text: str) -> int:
    """How deep `[` and `{` nest in `text`, counted wherever they stand (an upper bound)."""
    depth = deepest = 0
    for match in re.finditer(r"[\[\]{}]", text):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(depth - 1, 0)
    return deepest


class _FrontMatterLoader(yaml.SafeLoader):
    """SafeLoader that refuses nodes nested deeper than MAX_FRONT_MATTER_DEPTH."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self._depth >= MAX_FRONT_MATTER_DEPTH:
            raise _too_deep()
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_front_matter(yaml_text: str) -> dict[str, Any]:
    if len(yaml_text.encode()) > MAX_FRONT_MATTER_BYTES:
        raise PackageError(
            "skill_md", f"the front matter must be at most {MAX_FRONT_MATTER_BYTES} bytes"
        )
    if _bracket_depth(yaml_text) > _MAX_BRACKET_DEPTH:
        raise _too_deep()
    try:
        front = yaml.load(yaml_text, Loader=_FrontMatterLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise PackageError(
            "skill_md", f"the front matter is not valid YAML{where}: {problem}"
        ) from exc
    if front is None:
        front = {}
    if not isinstance(front, dict):
        raise PackageError("skill_md", "the front matter must be a YAML mapping (key: value)")
    unknown = sorted(str(k) for k in front if k not in FRONT_MATTER_KEYS)
    if unknown:
        raise _fm_error(
            unknown[0],
            f"unknown front matter key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)}; allowed: {', '.join(FRONT_MATTER_KEYS)} "
            "(put anything else under 'metadata')",
        )
    name = _string(front, "name", maximum=NAME_MAX * 2, required=True)
    assert name is not None
    _validate_name(name)
    clean: dict[str, Any] = {
        "name": name,
        "description": _string(front, "description", maximum=DESCRIPTION_MAX, required=True),
    }
    for key, maximum in (("license", LICENSE_MAX), ("compatibility", COMPATIBILITY_MAX)):
        value = _string(front, key, maximum=maximum, required=False)
        if value is not None:
            clean[key] = value
    if front.get("metadata") is not None:
        clean["metadata"] = _metadata(front["metadata"])
    if front.get("allowed-tools") is not None:
        clean["allowed-tools"] = _allowed_tools(front["allowed-tools"])
    return clean


def _decode_skill_md(raw: bytes) -> str:
    if len(raw) > MAX_SKILL_MD_BYTES:
        raise PackageError("skill_md", f"SKILL.md must be at most {MAX_SKILL_MD_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageError("skill_md", "SKILL.md must be UTF-8 text") from exc


# -- files ---------------------------------------------------------------------------------


def normalise_path(raw: str, *, field_prefix: str = "files") -> str:
    """A package-relative file path in canonical form, or a PackageError naming it.

    Refused: absolute paths, drive letters, backslashes, NUL and other control characters,
    `..` segments, paths outside scripts/, references/ and assets/, too long or too deep.
    `.` and empty segments are dropped; the result is NFC-normalised.
    """
    shown = raw[:MAX_PATH_CHARS].encode("unicode_escape").decode("ascii")
    field = f"{field_prefix}.{shown}"
    if not raw:
        raise PackageError(field_prefix, "file paths must not be empty")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in raw):
        raise PackageError(field, "control or invisible characters in a file path")
    if any(unicodedata.category(ch) == "Cs" for ch in raw):
        raise PackageError(field, "file paths must be valid Unicode text (no lone surrogates)")
    if "\\" in raw:
        raise PackageError(field, "backslashes are not allowed in file paths; use '/'")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise PackageError(field, "absolute paths are not allowed")
    segments = [s for s in raw.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise PackageError(field, "'..' is not allowed in file paths")
    path = unicodedata.normalize("NFC", "/".join(segments))
    if len(path) > MAX_PATH_CHARS:
        raise PackageError(field, f"file paths must be at most {MAX_PATH_CHARS} characters")
    if len(segments) > MAX_PATH_DEPTH:
        raise PackageError(field, f"file paths may be at most {MAX_PATH_DEPTH} levels deep")
    if len(segments) < 2 or segments[0] not in FILE_ROOTS:
        raise PackageError(
            field, "files must be under scripts/, references/ or assets/ (SKILL.md is separate)"
        )
    return path


def _check_files(files: Mapping[str, bytes], skill_md_bytes: int) -> dict[str, bytes]:
    if len(files) > MAX_FILES:
        raise PackageError("files", f"a skill may have at most {MAX_FILES} files")
    clean: dict[str, bytes] = {}
    folded: dict[str, str] = {}
    total = skill_md_bytes
    for raw_path, content in files.items():
        path = normalise_path(raw_path)
        key = path.casefold()
        if key in folded:
            raise PackageError(
                f"files.{path}", f"duplicate path (same as {folded[key]!r} once normalised)"
            )
        folded[key] = path
        if len(content) > MAX_FILE_BYTES:
            raise PackageError(f"files.{path}", f"each file must be at most {MAX_FILE_BYTES} bytes")
        total += len(content)
        if total > MAX_PACKAGE_BYTES:
            raise PackageError(
                "files", f"the whole skill must be at most {MAX_PACKAGE_BYTES} bytes"
            )
        clean[path] = content
    # A file and a folder of the same name cannot both exist in a workspace.
    for path in clean:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in clean:
                raise PackageError(f"files.{path}", f"{prefix!r} is both a file and a folder")
    return clean


def _utf8(text: str, field: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate (JSON can carry one as \ud800)
        message = f"{what} must be valid Unicode text (no lone surrogates)"
        raise PackageError(field, message) from exc


def build(skill_md: str, files: Mapping[str, bytes]) -> ParsedSkill:
    """Validate a package given as SKILL.md text and file contents by path."""
    if skill_md.startswith("\ufeff"):
        skill_md = skill_md[1:]
    if "\x00" in skill_md:
        raise PackageError("skill_md", "SKILL.md must not contain NUL characters")
    skill_md_bytes = len(_utf8(skill_md, "skill_md", "SKILL.md"))
    if skill_md_bytes > MAX_SKILL_MD_BYTES:
        raise PackageError("skill_md", f"SKILL.md must be at most {MAX_SKILL_MD_BYTES} bytes")
    yaml_text, body = split_front_matter(skill_md)
    front = parse_front_matter(yaml_text)
    return ParsedSkill(
        name=front["name"],
        description=front["description"],
        front_matter=front,
        body=body,
        skill_md=skill_md,
        files=_check_files(files, skill_md_bytes),
    )


def from_json(skill_md: str, files: Mapping[str, str]) -> ParsedSkill:
    """A package sent as JSON: the file values are UTF-8 text."""
    if len(files) > MAX_FILES:
        raise PackageError("files", f"a skill may have at most {MAX_FILES} files")
    contents = {
        path: _utf8(text, f"files.{normalise_path(path)}", "the file")
        for path, text in files.items()
    }
    return build(skill_md, contents)


# -- zip -----------------------------------------------------------------------------------


def _zip_error(message: str) -> PackageError:
    return PackageError("file", message)


def _is_litter(name: str) -> bool:
    return name.startswith(_ARCHIVER_LITTER) or name.rsplit("/", 1)[-1] in _ARCHIVER_FILES


def _entry_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode):  # Unix: the high bits carry st_mode
        if stat.S_ISLNK(mode):
            return "symlink"
        if stat.S_ISDIR(mode):
            return "dir"
        if not stat.S_ISREG(mode):
            return "special"
    return "dir" if info.orig_filename.endswith("/") else "file"


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """The entry's bytes, read in chunks and stopped as soon as they pass what was declared
    or what is left of the size budget (a zip bomb never inflates past either)."""
    limit = min(info.file_size, budget, MAX_FILE_BYTES)
    chunks: list[bytes] = []
    read = 0
    try:
        with archive.open(info) as stream:
            while True:
                chunk = stream.read(64 * 1024)
                if not chunk:
                    break
                read += len(chunk)
                if read > limit:
                    raise _zip_error(
                        f"{info.orig_filename!r} inflates past its declared size or the limits"
                    )
                chunks.append(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise _zip_error(f"{info.orig_filename!r} cannot be read: {exc}") from exc
    except NotImplementedError as exc:
        raise _zip_error(f"{info.orig_filename!r} uses an unsupported compression") from exc
    if read != info.file_size:
        raise _zip_error(f"{info.orig_filename!r} is shorter than its declared size")
    return b"".join(chunks)


def _strip_top_folder(names: list[str]) -> str:
    """'' when SKILL.md is at the root, 'top/' when everything sits in one top folder."""
    if "SKILL.md" in names:
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1:
        top = next(iter(tops))
        if f"{top}/SKILL.md" in names:
            return f"{top}/"
    raise _zip_error("SKILL.md not found at the root of the zip or in its single top folder")


def from_zip(data: bytes) -> ParsedSkill:
    """A package uploaded as a zip archive (already read under MAX_ZIP_BYTES).

    Every entry name is checked before anything is inflated; symlinks, devices and encrypted
    entries are refused; declared sizes are checked against the limits first and the actual
    bytes again while inflating.
    """
    if len(data) > MAX_ZIP_BYTES:
        raise UploadTooLargeError(f"the zip must be at most {MAX_ZIP_BYTES} bytes")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise _zip_error("not a valid zip archive") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise _zip_error(f"the zip may hold at most {MAX_ZIP_ENTRIES} entries")
        entries: list[tuple[str, zipfile.ZipInfo]] = []
        for info in infos:
            raw = info.orig_filename
            if _is_litter(raw):
                continue
            kind = _entry_kind(info)
            checked = raw.rstrip("/") if kind == "dir" else raw
            _check_zip_name(checked)
            if kind in ("symlink", "special"):
                raise PackageError(f"files.{raw}", f"{kind} entries are not allowed in a skill zip")
            if info.flag_bits & 0x1:
                raise PackageError(f"files.{raw}", "encrypted entries are not allowed")
            if kind == "file":
                entries.append((raw, info))
        names = [name for name, _ in entries]
        prefix = _strip_top_folder(names)
        declared = sum(info.file_size for _, info in entries)
        if declared > MAX_PACKAGE_BYTES:
            raise _zip_error(f"the whole skill must be at most {MAX_PACKAGE_BYTES} bytes")
        if len(entries) - 1 > MAX_FILES:
            raise PackageError("files", f"a skill may have at most {MAX_FILES} files")
        budget = MAX_PACKAGE_BYTES
        skill_md: str | None = None
        files: dict[str, bytes] = {}
        for name, info in entries:
            if not name.startswith(prefix):
                raise _zip_error(f"{name!r} is outside the skill's folder")
            relative = name[len(prefix) :]
            if info.file_size > (MAX_SKILL_MD_BYTES if relative == "SKILL.md" else MAX_FILE_BYTES):
                raise PackageError(f"files.{relative}", "file too large")
            content = _read_entry(archive, info, budget)
            budget -= len(content)
            if relative == "SKILL.md":
                skill_md = _decode_skill_md(content)
            elif relative in files:
                raise PackageError(f"files.{relative}", "duplicate path in the zip")
            else:
                files[relative] = content
        assert skill_md is not None
        return build(skill_md, files)


def _check_zip_name(raw: str) -> None:
    """Zip-slip and odd names, checked on the name as stored (NUL included)."""
    field = f"files.{raw[:MAX_PATH_CHARS].encode('unicode_escape').decode('ascii')}"
    if "\x00" in raw:
        raise PackageError(field, "NUL characters are not allowed in file paths")
    if "\\" in raw:
        raise PackageError(field, "backslashes are not allowed in file paths; use '/'")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise PackageError(field, "absolute paths are not allowed")
    if ".." in raw.split("/"):
        raise PackageError(field, "'..' is not allowed in file paths")
    if len(raw) > MAX_PATH_CHARS + NAME_MAX + 1:
        raise PackageError(field, "file path too long")
