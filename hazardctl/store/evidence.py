"""Evidence files: the JPEG crops of incidents' results, one file per distinct content (sha256), under
`DATA_DIR/evidence/ab/abcdef….jpg`, written atomically (temp file + rename) so a crash never leaves half
a picture. The size cap is kept by the store's writer (oldest evidence first, see IncidentStore.prune).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path


class EvidenceFiles:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / f"{sha256}.jpg"

    @staticmethod
    def decode(crop_b64: str) -> bytes | None:
        """The crop's bytes, or None when it is not valid base64 (kept as a result without evidence)."""
        try:
            return base64.b64decode(crop_b64, validate=True)
        except (binascii.Error, ValueError):
            return None

    def put(self, data: bytes) -> tuple[str, bool]:
        """Store `data` under its hash: (sha256, True when a new file was written)."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha)
        if path.exists():
            return sha, False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return sha, True

    def read(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except (FileNotFoundError, ValueError):
            return None

    def delete(self, sha256: str) -> None:
        try:
            self.path(sha256).unlink()
        except (FileNotFoundError, ValueError):
            pass
