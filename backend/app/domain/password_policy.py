"""The password policy for new passwords (registration and reset; never login, so passwords
chosen before it keep working).

Passwords are taken exactly as typed (no stripping, no normalisation of what is hashed). The
rules compare a folded copy (NFKC, case-folded), so "PASSWORD1" and its full-width look-alike
are as common as "password1":
- length: 8 to 128 characters (argon2 hashes any length; the cap bounds the work per request);
- not the e-mail address, its local part, nor containing either (local parts under 4
  characters are too short to mean anything inside a password);
- not in the list of common passwords shipped in common_passwords.txt beside this module
  (built by devtools/build_common_passwords.py, which names its source and licence).
"""

import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Final

from app.errors import InvalidInput

MIN_LENGTH: Final = 8
MAX_LENGTH: Final = 128
COMMON_PASSWORDS_FILE: Final = Path(__file__).with_name("common_passwords.txt")
# A local part shorter than this is not looked for inside a password ("al" is in "always").
_MIN_LOCAL_PART_INSIDE: Final = 4


class WeakPassword(InvalidInput):
    """422 weak_password; the message says which rule the password breaks."""

    code = "weak_password"


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (folded), read once per process."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def check_new_password(password: str, email: str) -> None:
    """Raise WeakPassword unless `password` may be set for the account of `email` (normalised,
    see app.domain.auth.normalise_email)."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise WeakPassword(f"Passwords must be {MIN_LENGTH} to {MAX_LENGTH} characters long.")
    folded = _folded(password)
    local_part = email.rpartition("@")[0]
    if (
        email in folded
        or folded == local_part
        or (len(local_part) >= _MIN_LOCAL_PART_INSIDE and local_part in folded)
    ):
        raise WeakPassword("Passwords must not contain your e-mail address or its name part.")
    if folded in common_passwords() or folded.strip() in common_passwords():
        raise WeakPassword("This password is too common: choose one that is harder to guess.")
