"""
Shares: named, read-only directories, some protected by a password.

A share comes from the node's configuration (C{[plugin.files.shares]}) or
was added at run time (C{appn files share add}) and persisted in
C{shares.json} in the plugin's data directory.  A password is kept only as
a salted scrypt hash (L{hashPassword}); it is checked in constant time
(L{verifyPassword}) and wrong attempts are limited per peer node and share
with growing delays (L{AttemptLimiter}).  No password, and no hash, is ever
logged, shown in an error or answered by the API (C{Share}'s repr omits the
hash).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from twisted.logger import Logger

from appnpy.api import ConfigurationError
from appnpy_files import safety, wire

# scrypt parameters: N=2**15, r=8, p=1 costs 32 MiB and some 50-100 ms per
# check on one core, above the N=2**14 floor of RFC 7914's interactive
# example.  They are stored with each hash, so raising them later keeps old
# hashes valid.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_KEY_BYTES = 32
# The most a stored hash may ask for (a hand-edited config must not make
# every check allocate gigabytes).
_SCRYPT_MAX_N = 2**20
_SCRYPT_MAXMEM = 2**31 - 1

SHARES_FILE = "shares.json"


class ShareError(Exception):
    """
    A share cannot be added or removed; the text says why (never a password).
    """


# -- passwords ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hashPassword(password: str, *, n: int = SCRYPT_N) -> str:
    """
    A salted scrypt hash of C{password}, self-describing:
    C{scrypt$n=32768,r=8,p=1$<salt base64>$<key base64>}.  Blocking (some
    50-100 ms): call it off the reactor thread.
    """
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    key = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P)
    return f"scrypt$n={n},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(key)}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=min(_SCRYPT_MAXMEM, 128 * r * n * p + 2**20 * 16),
        dklen=SCRYPT_KEY_BYTES,
    )


def parsePasswordHash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """
    The parameters, salt and key of a stored hash.

    @raise ValueError: if it is not one L{hashPassword} makes (the message
        never contains the hash itself).
    """
    try:
        scheme, params, salt64, key64 = stored.split("$")
        fields = dict(item.split("=", 1) for item in params.split(","))
        n, r, p = int(fields["n"]), int(fields["r"]), int(fields["p"])
        salt = base64.b64decode(salt64, validate=True)
        key = base64.b64decode(key64, validate=True)
    except Exception:
        raise ValueError("not a scrypt password hash") from None
    if scheme != "scrypt" or set(fields) != {"n", "r", "p"}:
        raise ValueError("not a scrypt password hash")
    if not (2 <= n <= _SCRYPT_MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("scrypt salt or key too short")
    return n, r, p, salt, key


def verifyPassword(password: str, stored: str) -> bool:
    """
    Whether C{password} matches the stored hash, compared in constant time.
    Blocking (the scrypt cost): call it off the reactor thread.
    """
    n, r, p, salt, key = parsePasswordHash(stored)
    candidate = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=min(_SCRYPT_MAXMEM, 128 * r * n * p + 2**20 * 16),
        dklen=len(key),
    )
    return hmac.compare_digest(candidate, key)


# -- shares ------------------------------------------------------------------------


@attrs.frozen
class Share:
    """
    One share.  C{directory} is the resolved root; C{origin} is
    C{"config"} or C{"added"} (persisted in shares.json, removable).
    """

    name: str
    directory: str
    passwordHash: str | None = attrs.field(default=None, repr=False)
    allowHardlinks: bool = False
    origin: str = "added"

    @property
    def protected(self) -> bool:
        return self.passwordHash is not None

    def describe(self) -> dict[str, Any]:
        """
        What the API and C{appn files share list} show: never the hash.
        """
        return {
            "name": self.name,
            "directory": self.directory,
            "protected": self.protected,
            "allow_hardlinks": self.allowHardlinks,
            "origin": self.origin,
        }


def _checkName(name: object, where: str) -> str:
    if type(name) is not str or not wire.validShareName(name):
        raise ConfigurationError(
            f"{where}: share name {str(name)[:70]!r} must be 1-64 letters, digits, '-', '_' or '.'"
            " (not starting with '.')"
        )
    return name


def _shareFromConfig(name: str, value: object) -> Share:
    where = f"[plugin.files.shares] {name}"
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where} must be a directory path or a table with 'path'")
    unknown = set(value) - {"path", "password-hash", "allow-hardlinks"}
    if unknown:
        raise ConfigurationError(f"{where} has no key {sorted(unknown)[0]!r}")
    path = value.get("path")
    if type(path) is not str or not path:
        raise ConfigurationError(f"{where}: 'path' must be a directory")
    try:
        root = safety.resolveShareRoot(path)
    except (NotADirectoryError, OSError):
        raise ConfigurationError(f"{where}: {path!r} is not a directory") from None
    passwordHash = value.get("password-hash")
    if passwordHash is not None:
        if type(passwordHash) is not str:
            raise ConfigurationError(f"{where}: 'password-hash' must be text")
        try:
            parsePasswordHash(passwordHash)
        except ValueError as e:
            raise ConfigurationError(f"{where}: 'password-hash' is invalid ({e})") from None
    allow = value.get("allow-hardlinks", False)
    if type(allow) is not bool:
        raise ConfigurationError(f"{where}: 'allow-hardlinks' must be true or false")
    return Share(name, root, passwordHash, allow, "config")


class ShareSet:
    """
    The node's shares: those of the configuration, plus those added at run
    time and persisted (atomically, mode 0600) in C{shares.json} in
    C{dataDirectory} (None: nothing is persisted, tests).
    """

    log = Logger()

    def __init__(self, dataDirectory: str | None = None) -> None:
        self.dataDirectory = dataDirectory
        self._shares: dict[str, Share] = {}
        self._listeners: list[Callable[[], None]] = []

    # -- loading

    def loadConfig(self, section: object) -> None:
        """
        Add the shares of the configuration's C{shares} table: each a path
        or a table C{{path, password-hash, allow-hardlinks}}.

        @raise ConfigurationError: naming the bad key.
        """
        if section is None:
            return
        if not isinstance(section, dict):
            raise ConfigurationError("[plugin.files] shares must be a table of name = path")
        for name, value in section.items():
            _checkName(name, "[plugin.files.shares]")
            share = _shareFromConfig(name, value)
            try:
                self._checkNotState(share.directory)
            except ShareError as e:
                raise ConfigurationError(f"[plugin.files.shares] {name}: {e}") from None
            self._shares[name] = share

    def loadPersisted(self) -> None:
        """
        Add the shares persisted in shares.json (if there is one).  A share
        whose directory is gone is kept (it serves nothing until it is back)
        and logged; a share named like a configured one is ignored.

        @raise ConfigurationError: if the file is unreadable or malformed.
        """
        path = self._path()
        if path is None or not os.path.exists(path):
            return
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if type(data) is not dict or data.get("version") != 1 or type(data.get("shares")) is not list:
                raise ValueError("not a shares file of version 1")
            for item in data["shares"]:
                name = _checkName(item.get("name"), path)
                directory = item["directory"]
                passwordHash = item.get("password_hash")
                if type(directory) is not str or (passwordHash is not None and type(passwordHash) is not str):
                    raise ValueError("bad share entry")
                if passwordHash is not None:
                    parsePasswordHash(passwordHash)
                if name in self._shares:
                    self.log.warn("share {share} in {path} is also configured; the configuration wins", share=name, path=path)
                    continue
                if not os.path.isdir(directory):
                    self.log.warn("share {share}: directory {directory} is missing", share=name, directory=directory)
                self._shares[name] = Share(name, directory, passwordHash, bool(item.get("allow_hardlinks", False)), "added")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigurationError(f"{path} is unreadable: {type(e).__name__}") from None

    def _checkNotState(self, root: str) -> None:
        """
        Refuse a share that holds the node's own state: sharing the data
        directory (or C{/}, or the home directory holding it) would serve
        the node's private identity key and API token to anyone.

        @raise ShareError: if it does.
        """
        if self.dataDirectory is None:
            return
        state = os.path.realpath(self.dataDirectory)
        # <data-dir>/plugins/<name>: the node's data directory is two up.
        parent = os.path.dirname(state)
        if os.path.basename(parent) == "plugins":
            state = os.path.dirname(parent)
        inside = os.path.commonpath([root, state]) in (root, state)
        if inside:
            raise ShareError(
                f"{root!r} holds (or is inside) this node's data directory {state!r}, "
                "with its private key: share a directory outside it"
            )

    # -- queries

    def __iter__(self) -> Iterator[Share]:
        return iter(sorted(self._shares.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._shares)

    def get(self, name: str) -> Share | None:
        return self._shares.get(name)

    def names(self) -> list[str]:
        return sorted(self._shares)

    def onChange(self, listener: Callable[[], None]) -> None:
        """
        Call C{listener()} after every add or remove (the index rescans,
        the plugin tells the directory).
        """
        self._listeners.append(listener)

    # -- changes

    def add(
        self,
        name: str,
        directory: str,
        passwordHash: str | None = None,
        allowHardlinks: bool = False,
    ) -> Share:
        """
        Add and persist a share.  The password arrives already hashed
        (L{hashPassword}, off the reactor thread).

        @raise ShareError: for a bad or taken name or a missing directory.
        """
        if not wire.validShareName(name):
            raise ShareError(f"{name[:70]!r} is not a share name (1-64 letters, digits, '-', '_', '.')")
        if name in self._shares:
            raise ShareError(f"a share named {name!r} exists")
        try:
            root = safety.resolveShareRoot(directory)
        except (NotADirectoryError, OSError):
            raise ShareError(f"{directory!r} is not a directory") from None
        self._checkNotState(root)
        if passwordHash is not None:
            try:
                parsePasswordHash(passwordHash)
            except ValueError as e:
                raise ShareError(str(e)) from None
        share = Share(name, root, passwordHash, allowHardlinks, "added")
        self._shares[name] = share
        try:
            self._persist()
        except OSError as e:
            del self._shares[name]
            raise ShareError(f"cannot save the shares: {e.strerror}") from None
        self.log.info("share {share} added ({directory}, protected={protected})", share=name, directory=root, protected=share.protected)
        self._changed()
        return share

    def remove(self, name: str) -> None:
        """
        Remove a share added at run time.

        @raise ShareError: if there is none, or it is in the configuration.
        """
        share = self._shares.get(name)
        if share is None:
            raise ShareError(f"no share named {name[:70]!r}")
        if share.origin == "config":
            raise ShareError(f"share {name!r} is in the configuration file; remove it there")
        del self._shares[name]
        try:
            self._persist()
        except OSError as e:
            self._shares[name] = share
            raise ShareError(f"cannot save the shares: {e.strerror}") from None
        self.log.info("share {share} removed", share=name)
        self._changed()

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _path(self) -> str | None:
        return None if self.dataDirectory is None else os.path.join(self.dataDirectory, SHARES_FILE)

    def _persist(self) -> None:
        path = self._path()
        if path is None:
            return
        data = {
            "version": 1,
            "shares": [
                {
                    "name": s.name,
                    "directory": s.directory,
                    "password_hash": s.passwordHash,
                    "allow_hardlinks": s.allowHardlinks,
                }
                for s in self
                if s.origin == "added"
            ],
        }
        atomicWrite(path, json.dumps(data, indent=2).encode("utf-8") + b"\n")


def atomicWrite(path: str, data: bytes) -> None:
    """
    Replace C{path} with C{data} so a crash leaves the old or the new file,
    never a torn one: write a temporary file (mode 0600) beside it, fsync,
    C{os.replace}, fsync the directory.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dirFD = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dirFD)
    finally:
        os.close(dirFD)


# -- attempt limiting -------------------------------------------------------------


@attrs.define
class _Attempts:
    failures: int = 0
    blockedUntil: float = 0.0
    last: float = 0.0


class AttemptLimiter:
    """
    Wrong passwords per (peer node ID, share): the first C{free} failures
    cost nothing; after that each failure blocks further attempts for a
    delay that doubles from C{firstDelay} up to C{maxDelay} seconds.  A
    success, or C{forgetAfter} seconds without a failure, forgets the peer.
    At most C{capacity} pairs are remembered (the least recently failed are
    forgotten first), so a flood of node IDs cannot grow the table.
    """

    def __init__(
        self,
        seconds: Callable[[], float],
        *,
        free: int = 3,
        firstDelay: float = 1.0,
        maxDelay: float = 300.0,
        forgetAfter: float = 3600.0,
        capacity: int = 10000,
    ) -> None:
        self.seconds = seconds
        self.free = free
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
        self.forgetAfter = forgetAfter
        self.capacity = capacity
        self._table: OrderedDict[tuple[str, str], _Attempts] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def retryAfter(self, peer: str, share: str) -> float:
        """
        Seconds before C{peer} may try C{share} again (0: now).
        """
        entry = self._table.get((peer, share))
        if entry is None:
            return 0.0
        now = self.seconds()
        if now - entry.last > self.forgetAfter:
            del self._table[(peer, share)]
            return 0.0
        return max(0.0, entry.blockedUntil - now)

    def failed(self, peer: str, share: str) -> float:
        """
        Count a wrong password; answer the delay it imposes (0 while free).
        """
        now = self.seconds()
        key = (peer, share)
        entry = self._table.pop(key, None)
        if entry is None or now - entry.last > self.forgetAfter:
            entry = _Attempts()
        entry.failures += 1
        entry.last = now
        delay = 0.0
        if entry.failures >= self.free:
            delay = min(self.maxDelay, self.firstDelay * 2 ** min(entry.failures - self.free, 64))
            entry.blockedUntil = now + delay
        self._table[key] = entry
        while len(self._table) > self.capacity:
            self._table.popitem(last=False)
        return delay

    def succeeded(self, peer: str, share: str) -> None:
        self._table.pop((peer, share), None)


# -- the serving side's configuration keys ------------------------------------------

#: The keys of [plugin.files] the serving side reads; the plugin refuses
#: keys that neither side knows.
SERVE_KEYS = frozenset({"shares", "upload-limit", "rescan-interval", "hash-threads"})


@attrs.frozen
class ServeSettings:
    """
    The serving side's settings from [plugin.files]:

     - C{shares}: a table, name = path or name = {path, password-hash,
       allow-hardlinks};
     - C{upload-limit}: bytes per second sent to all peers together, 0 for
       no limit (default);
     - C{rescan-interval}: seconds between rescans of the shares for
       changed files, 0 for never (default 300);
     - C{hash-threads}: threads that read and hash files (default 2).
    """

    uploadLimit: int = 0
    rescanInterval: float = 300.0
    hashThreads: int = 2

    @classmethod
    def fromSection(cls, section: dict[str, Any]) -> ServeSettings:
        """
        @raise ConfigurationError: naming a bad value (unknown keys are the
            plugin's to refuse).
        """
        limit = section.get("upload-limit", 0)
        if type(limit) is not int or limit < 0:
            raise ConfigurationError("[plugin.files] upload-limit must be bytes per second >= 0")
        interval = section.get("rescan-interval", 300)
        if type(interval) not in (int, float) or not 0 <= interval <= 86400 * 7:
            raise ConfigurationError("[plugin.files] rescan-interval must be seconds, 0 to 604800")
        threads = section.get("hash-threads", 2)
        if type(threads) is not int or not 1 <= threads <= 64:
            raise ConfigurationError("[plugin.files] hash-threads must be 1 to 64")
        return cls(limit, float(interval), threads)
