"""Getting dataset files onto disk safely: atomic downloads, undo on failure, archives that cannot escape."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from pytorch_lightning.utilities import rank_zero_info

from gon_lightning.errors import UserError


@contextmanager
def removed_on_error(directory: Path) -> Iterator[None]:
    """Undo a failed download or extraction: delete what appeared under `directory`, keep what was there."""
    before = set(directory.rglob("*")) if directory.exists() else set()
    existed = directory.exists()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            for path in sorted(set(directory.rglob("*")) - before, key=lambda p: len(p.parts), reverse=True):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise


def fetch(urls: Sequence[str], target: Path, timeout: float = 60.0) -> None:
    """Download the first of `urls` that answers into `target`, atomically (temporary file, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        rank_zero_info(f"Downloading {url} -> {target}")
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out)
            os.replace(tmp, target)
            return
        except OSError as error:  # URLError, HTTPError and timeouts are OSErrors
            errors.append(f"{url}: {error}")
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise UserError(f"could not download {target.name}:\n  " + "\n  ".join(errors))


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip into the new folder `target`, refusing it whole if any member would land outside.

    Extraction goes to a staging folder renamed into place, so an interrupted one leaves nothing; an archive
    whose members sit in one top folder named like `target` is not nested twice.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                path = PurePosixPath(member.filename.replace("\\", "/"))
                if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
                    raise UserError(
                        f"refusing to extract {archive}: member {member.filename!r} would be written outside "
                        f"{target}. The archive is unsafe; delete it and download it again."
                    )
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
            try:
                zf.extractall(staging)
                top = staging / target.name
                (top if top.is_dir() else staging).rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except zipfile.BadZipFile as error:
        raise UserError(f"{archive} is not a valid zip ({error}); delete it and download again") from error
