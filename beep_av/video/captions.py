"""Captions: one plain sentence per phase, in assets/captions/<lang>.toml.

A teacher can edit these files; a broken one ends the show before it starts with a
one-line BadInput naming the file and what is wrong."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from beep_av.acts.spec import CAPTION_KEYS as ACT_KEYS  # the acts' own (optional)
from beep_av.errors import BadInput
from beep_av.model import PHASES
from beep_av.resources import asset

CAPTIONS_DIR = asset("captions")  # packaged (importlib.resources), or the checkout's
LANGS = ("en", "fr")

REQUIRED = tuple(p.value for p in PHASES) + (
    "skipped_evicting",
    "skipped_swapping",
    "paused",
    "muted",
)
# the container stage's words for what a Kubernetes user would see (optional keys)
CONTAINER_KEYS = ("container_oomkilled", "container_restarts", "container_crashloop")
# the card's why line, from the kernel's own report (optional keys; the English
# defaults are oomreport.WHY_TEXT and summary.WHY_UNKNOWN)
WHY_KEYS = (
    "why_label",
    "why_first",
    "why_rank",
    "why_only",
    "why_share",
    "why_unknown",
    "why_asked",
    "why_asked_self",
)
KNOWN = (
    frozenset(REQUIRED)
    | {f"skipped_{p.value}" for p in PHASES}
    | set(CONTAINER_KEYS)
    | set(WHY_KEYS)
    | frozenset(ACT_KEYS)
)
MAX_CHARS = 400  # one sentence for the back row, not an essay
_LANG_RE = re.compile(r"^[a-z]{2,8}$")


def load_captions(lang: str, directory: str | Path | None = None) -> dict[str, str]:
    """Read `<directory>/<lang>.toml` (default: assets/captions) -> {key: sentence}.

    Keys are the phase names, `skipped_<phase>`, `paused` and `muted`.
    Raises BadInput naming the file for a missing, unreadable or malformed file."""
    if not isinstance(lang, str) or not _LANG_RE.match(lang):
        raise BadInput(f"captions: {lang!r} is not a language code (use e.g. en, fr)")
    folder = Path(directory) if directory is not None else CAPTIONS_DIR
    path = folder.joinpath(f"{lang}.toml")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"captions: no captions for {lang!r} ({path} does not exist)") from None
    except OSError as e:
        raise BadInput(f"captions: cannot read {path} ({e.strerror or e})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInput(f"captions: {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"captions: {path} is not valid TOML ({e})") from None
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in KNOWN:
            raise BadInput(
                f"captions: {path}: unknown key {key!r} (known: {', '.join(sorted(KNOWN))})"
            )
        if not isinstance(value, str):
            raise BadInput(f"captions: {path}: {key!r} must be a string in quotes")
        if len(value) > MAX_CHARS:
            raise BadInput(f"captions: {path}: {key!r} is longer than {MAX_CHARS} characters")
        out[key] = value.strip()
    missing = [k for k in REQUIRED if k not in out]
    if missing:
        raise BadInput(f"captions: {path}: missing {', '.join(missing)}")
    return out


class Captions:
    """Sentences of several languages, so the presenter can cycle en -> fr -> off."""

    def __init__(self, texts: dict[str, dict[str, str]]) -> None:
        self.texts = texts

    @classmethod
    def load(cls, langs: tuple[str, ...] = LANGS, directory: str | Path | None = None) -> Captions:
        """Load every language in `langs`. Raises BadInput on the first bad file."""
        return cls({lang: load_captions(lang, directory) for lang in langs})

    def get(self, lang: str, key: str) -> str | None:
        """The sentence for `key` in `lang`, or None."""
        return self.texts.get(lang, {}).get(key)
