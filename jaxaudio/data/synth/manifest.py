"""The manifest that marks a generated data set as complete.

It is written last and atomically (temp file + rename), so its presence means every file it
lists was fully written. It records the generator version and config (what the set *is*) and
each file's size and sha256 (what is on disk), plus one hash over all of them.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST_NAME = "synth_manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(files: dict[str, dict]) -> str:
    """One hash over sorted (relative path, size, sha256) triples."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\t{files[rel]['size']}\t{files[rel]['sha256']}\n".encode())
    return h.hexdigest()


def write_manifest(root: Path, identity: dict, files: dict[str, dict]) -> Path:
    """Write `root/synth_manifest.json` atomically; `identity` says which set this is."""
    manifest = {"identity": identity, "content_sha256": content_hash(files), "files": files}
    path = Path(root) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_manifest(root: Path) -> dict | None:
    path = Path(root) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_complete(root: Path, identity: dict, verify_hashes: bool = False) -> bool:
    """True when root holds a manifest for `identity` and every listed file is intact.

    Sizes are always checked (cheap); sha256 of every file only with verify_hashes.
    """
    manifest = read_manifest(root)
    if manifest is None or manifest.get("identity") != identity:
        return False
    files = manifest.get("files", {})
    if not files or manifest.get("content_sha256") != content_hash(files):
        return False
    for rel, info in files.items():
        path = Path(root) / rel
        try:
            if path.stat().st_size != info["size"]:
                return False
        except OSError:
            return False
        if verify_hashes and sha256_file(path) != info["sha256"]:
            return False
    return True
