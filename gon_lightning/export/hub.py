"""The Hugging Face Hub: uploading an export folder (`--push`) and downloading one by repository id."""

from __future__ import annotations

import re
from pathlib import Path

from gon_lightning import __version__
from gon_lightning.errors import UserError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def push_to_hub(folder: Path, repo_id: str) -> None:
    """Upload an export folder to the Hub model repository `repo_id` (created if missing; needs a login)."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=f"gon-lightning {__version__} export",
        )
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else ""
        raise UserError(f"--push {repo_id}: the upload failed ({type(error).__name__}: {first})") from error
    print(f"pushed {folder} to https://huggingface.co/{repo_id} ({getattr(info, 'commit_url', '')})")


def download(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise UserError(
            f"{repo_id} is not a local folder; loading it from the Hugging Face Hub needs huggingface_hub: "
            "pip install 'gon-lightning[hub]'"
        ) from error
    try:
        return Path(
            snapshot_download(repo_id, revision=revision, library_name="gon-lightning", library_version=__version__)
        )
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else ""
        raise UserError(
            f"{repo_id}: no such local folder, and the Hub download failed ({type(error).__name__}: {first})"
        ) from error
