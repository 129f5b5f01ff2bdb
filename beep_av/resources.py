"""Where the assets are: captions, presets and the example recording.

They live in the top-level `assets/` folder of the checkout and ship in the wheel as
package data, `beep_av/assets` (pyproject.toml maps the package `beep_av.assets` to
`assets/`). An installed beep-av reads them through importlib.resources; a checkout
(`python -m beep_av` from the repository, or an editable install) has no
`beep_av/assets`, and reads the top-level folder instead.

(Not named `assets.py`: a module `beep_av.assets` would hide the data package.)"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

CHECKOUT_ASSETS = Path(__file__).resolve().parent.parent / "assets"
EXAMPLE = "example-show.jsonl"


def assets() -> Traversable:
    """The assets folder: the packaged one when installed, else the checkout's."""
    packaged = files("beep_av").joinpath("assets")
    if packaged.is_dir():
        return packaged
    return CHECKOUT_ASSETS


def asset(*parts: str) -> Traversable:
    """One file or folder under the assets folder, e.g. asset("captions", "fr.toml")."""
    return assets().joinpath(*parts)


def example_recording() -> Path:
    """The shipped example recording (a real cgroup show) as a file system path.

    Installed from a wheel the package is a folder on disk, so this is a real path;
    a package imported from a zip file has none (a BadInput says so)."""
    from beep_av.errors import BadInput

    path = asset(EXAMPLE)
    if not isinstance(path, Path) or not path.is_file():
        raise BadInput(f"replay: the example recording is not installed ({path})")
    return path
