"""Keyed patient pseudonyms: HMAC-SHA256 under a per-site secret key.

Patient ids (and file names, which often carry them: ``Smith_John_CXR.dcm``) leave the site only as
pseudonyms: the first 128 bits of ``HMAC-SHA256(key, domain || 0x00 || value)``, written as 32 hex
characters.

What it protects against: a reader of a split manifest, a COCO file or an audit record who knows how
the pseudonyms are made but not the key. Patient ids are short and can be enumerated (every 6-digit
MRN in a fraction of a second); an unkeyed or publicly salted hash of them is reversible by trying
them all. Without the key each guess is a guess at a 256-bit secret, so enumeration is hopeless.
What it does not protect against: anyone who holds the key (keep it like a password), and facts the
data gives away by itself (how many images a patient has, which split they are in).

The key, read lazily on the first pseudonym (never at import), comes from:

1. ``$RFO_PSEUDONYM_KEY``: at least 32 bytes, written as hex or base64;
2. otherwise a key file: ``$RFO_PSEUDONYM_KEY_FILE``, else ``$XDG_CONFIG_HOME/rfo-toolkit/pseudonym.key``
   (default ``~/.config/rfo-toolkit/pseudonym.key``). The key is a site secret, not a cache: it never
   lives in ``$RFO_CACHE_DIR``, which ``make clean`` deletes. It holds the key as hex text. When it does not exist a
   fresh random 256-bit key is written there, created with mode 0600 (``O_CREAT | O_EXCL``, so a
   concurrent run never overwrites it), and a warning names the file. A key file that the group or
   other users may read, or that holds fewer than 32 bytes, is refused.

Sharing a key across machines: pseudonyms are equal only under the same key, so every machine that
must produce the same split or the same patient groups needs the same key. Copy the key file with
its permissions kept (``install -m 600 pseudonym.key ~/.config/rfo-toolkit/``), or export the same
``RFO_PSEUDONYM_KEY`` from the site's secret store on every machine (``openssl rand -hex 32`` makes
one). Losing the key changes every pseudonym; a new key cannot be linked to the old pseudonyms.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path, PurePosixPath

from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

KEY_ENV = "RFO_PSEUDONYM_KEY"
"""Environment variable holding the key itself (hex or base64)."""

KEY_FILE_ENV = "RFO_PSEUDONYM_KEY_FILE"
"""Environment variable naming the key file (overrides the default location)."""

KEY_FILE_NAME = "pseudonym.key"
"""Name of the key file in the default directory."""

MIN_KEY_BYTES = 32
"""Shortest key accepted: 256 bits, the output size of the HMAC's hash."""

PSEUDONYM_HEX_CHARS = 32
"""Hex characters kept of the HMAC: 128 bits, so that neither guessing nor collisions are practical."""

PATIENT_DOMAIN = "patient"
FILE_NAME_DOMAIN = "file_name"


def key_file_path() -> Path:
    """Where the key file is read from and created (see the module docstring for the order)."""
    explicit = os.environ.get(KEY_FILE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config).expanduser() / "rfo-toolkit" / KEY_FILE_NAME


def parse_key(text: str, *, source: str, field: str | None = None) -> bytes:
    """The key bytes of a hex or base64 string.

    Raises:
        UserInputError: neither hex nor base64, or shorter than :data:`MIN_KEY_BYTES`.
    """
    value = "".join(text.split())
    try:
        key = bytes.fromhex(value)
    except ValueError:
        standard = value.replace("-", "+").replace("_", "/")  # the URL-safe alphabet too
        try:
            key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise UserInputError("pseudonym key must be hex or base64 text", file=source, field=field) from None
    if len(key) < MIN_KEY_BYTES:
        raise UserInputError(f"pseudonym key is too short: {len(key)} bytes, need at least {MIN_KEY_BYTES}",
                             file=source, field=field)
    return key


def _write_new_file(path: Path, text: str) -> bool:
    """Create ``path`` with mode 0600 holding ``text``; False when it already exists."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:
        return False
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return True


def _create_key_file(path: Path) -> None:
    """Write a fresh random key to ``path`` (mode 0600); a file another run created first is kept.

    The key is written to a private temporary file and hard-linked to ``path``, so that a concurrent
    reader never sees a half-written key; where the file system has no hard links the key file is
    created directly (``O_EXCL``).
    """
    text = secrets.token_hex(MIN_KEY_BYTES) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        _write_new_file(staging, text)
        try:
            os.link(staging, path)
            created = True
        except FileExistsError:  # another run created it first: use theirs
            created = False
        except OSError:  # no hard links here
            created = _write_new_file(path, text)
        finally:
            staging.unlink(missing_ok=True)
    except OSError as err:
        raise UserInputError(f"cannot create the pseudonym key file: {err.strerror or err}", file=path,
                             field=KEY_FILE_ENV) from None
    if created:
        logger.warning("created a new pseudonym key in %s; copy it (mode 0600) to every machine whose "
                       "pseudonyms must match, and keep it secret", path)


def _read_key_file(path: Path) -> bytes:
    try:
        info = path.stat()
    except OSError as err:
        raise UserInputError(f"cannot read the pseudonym key file: {err.strerror}", file=path) from None
    if not stat.S_ISREG(info.st_mode):
        raise UserInputError("pseudonym key file is not a regular file", file=path)
    if os.name == "posix" and info.st_mode & 0o077:
        raise UserInputError(
            f"pseudonym key file may be read by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run `chmod 600 {path}`", file=path, field="mode",
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(f"cannot read the pseudonym key file: {err}", file=path) from None
    return parse_key(text, source=str(path))


def load_key() -> bytes:
    """The site key: ``$RFO_PSEUDONYM_KEY``, else the key file (created on first use).

    Raises:
        UserInputError: a malformed or short key, a key file readable by others, or an unwritable
            key location.
    """
    text = os.environ.get(KEY_ENV)
    if text:
        return parse_key(text, source=f"${KEY_ENV}", field=KEY_ENV)
    path = key_file_path()
    if not path.exists() and not path.is_symlink():
        _create_key_file(path)
    return _read_key_file(path)


def pseudonym(value: str, *, domain: str = PATIENT_DOMAIN, key: bytes | None = None) -> str:
    """The keyed pseudonym of ``value``: 32 hex characters (128 bits of HMAC-SHA256).

    Args:
        value: the identifier (a patient id, a file name).
        domain: what kind of identifier it is; equal values of different domains get unrelated
            pseudonyms.
        key: the secret key; default :func:`load_key`.
    """
    secret = load_key() if key is None else key
    message = domain.encode("utf-8") + b"\0" + str(value).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]


def patient_pseudonym(patient_id: str, *, key: bytes | None = None) -> str:
    """The pseudonym of a patient id (surrounding whitespace ignored)."""
    return pseudonym(str(patient_id).strip(), domain=PATIENT_DOMAIN, key=key)


def file_name_pseudonym(file_name: str, *, key: bytes | None = None) -> str:
    """A pseudonymised file name: the pseudonym of the whole relative path, the suffix kept.

    ``Smith_John/CXR_1.dcm`` becomes ``<32 hex>.dcm``: no directory and no part of the name survives,
    and the suffix still tells readers the format.
    """
    name = str(file_name).replace("\\", "/")
    return pseudonym(name, domain=FILE_NAME_DOMAIN, key=key) + PurePosixPath(name).suffix.lower()
