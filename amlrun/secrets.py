"""Secret references and redaction.

A compute or run-configuration value may *refer* to a secret instead of holding it:

- ``secret:NAME`` (or Workbench's ``AzureMlSecret=NAME``): the environment variable
  ``NAME`` of the amlrun process, else key ``NAME`` of the user's credentials file.
  Workbench named its secrets ``<target>#<user>#<hash>``, so a name may hold ``#``;
- ``env:NAME``: only the environment variable ``NAME``.

The credentials file (``$AMLRUN_CREDENTIALS`` or ``~/.config/amlrun/credentials.yml``)
lives outside every project and must be readable by its owner only. Every value
resolved here is registered with the :class:`Redactor`, which masks it wherever amlrun
writes or prints.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from pathlib import Path

from amlrun.errors import ConfigError

MASK = "*****"
_REF = re.compile(r"^(?:secret:|AzureMlSecret=)(?P<secret>[A-Za-z0-9_.\-#]+)$|^env:(?P<env>[A-Za-z_][A-Za-z0-9_]*)$")


def credentials_path() -> Path:
    override = os.environ.get("AMLRUN_CREDENTIALS")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "amlrun" / "credentials.yml"


def is_reference(value: object) -> bool:
    return isinstance(value, str) and _REF.match(value) is not None


def secret_names(env: dict[str, str], raw: dict[str, object]) -> frozenset[str]:
    """The variables of a run's ``env`` whose run-configuration value (``raw``) refers to a
    secret: a target delivers these privately, never in a job or container description."""
    return frozenset(name for name in env if is_reference(raw.get(name)))


class CredentialStore:
    """The user-level credentials file (owner-only permissions, outside the project)."""

    def __init__(self, path: Path | None = None):
        self.path = path or credentials_path()

    def _check_permissions(self) -> None:
        mode = self.path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"credentials file is readable by others (mode {stat.S_IMODE(mode):o}); run: chmod 600 {self.path}"
            )

    def read(self) -> dict[str, str]:
        from amlrun.yamlfile import read_mapping

        if not self.path.is_file():
            return {}
        self._check_permissions()
        return {str(k): str(v) for k, v in read_mapping(self.path).items()}

    def get(self, name: str) -> str | None:
        return self.read().get(name)

    def put(self, name: str, value: str) -> None:
        import yaml

        data = self.read()
        data[name] = value
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(data, fh)
        os.chmod(self.path.with_suffix(".tmp"), 0o600)
        os.replace(self.path.with_suffix(".tmp"), self.path)


#: Secrets shorter than this are refused where they are resolved: masking every "a" of
#: every log would hide the log, not the secret (README, "Secrets").
MIN_SECRET_LENGTH = 3


def secret_forms(value: str) -> set[str]:
    """The spellings of ``value`` to mask: itself, each line of it, and its JSON-escaped,
    URL-encoded and base64 forms (what scripts and records commonly turn a secret into)."""
    import base64
    from urllib.parse import quote, quote_plus

    if len(value) < MIN_SECRET_LENGTH:
        return set()
    wholes = {value}
    lines = {line.strip() for line in value.splitlines()} if len(value.splitlines()) > 1 else set()
    # every line of a multi-line secret (a PEM key, a JSON credential) on its own, except
    # the ones too short to mask or without a letter or digit ("}", "-----"): they carry
    # nothing secret, and the whole value is masked wherever it appears whole
    wholes |= {line for line in lines if len(line) >= MIN_SECRET_LENGTH and any(c.isalnum() for c in line)}
    forms: set[str] = set()
    for text in wholes:
        forms |= {
            text,
            json.dumps(text)[1:-1],
            json.dumps(text, ensure_ascii=False)[1:-1],
            quote(text, safe=""),
            quote_plus(text, safe=""),
        }
    raw = value.encode("utf-8", "surrogateescape")
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms |= {encoded, encoded.rstrip("=")}
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class Redactor:
    """Masks every secret value that was resolved in this process."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        """Mask ``value`` from now on in every spelling :func:`secret_forms` lists. Values
        shorter than :data:`MIN_SECRET_LENGTH` are not masked (:func:`resolve` refuses them)."""
        if not value:
            return
        forms = secret_forms(value)
        with self._lock:
            if forms and not forms <= self._values:
                self._values |= forms
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def __call__(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def __bool__(self) -> bool:
        return bool(self._values)


redactor = Redactor()


def resolve(value: object, where: str, store: CredentialStore | None = None) -> str:
    """Return the value a reference stands for (registering it for redaction), or ``value``."""
    text = "" if value is None else str(value)
    match = _REF.match(text)
    if match is None:
        return text
    if match.group("env"):
        name = match.group("env")
        found = os.environ.get(name)
        if found is None:
            raise ConfigError(f"secret reference '{text}' names environment variable {name}, which is not set", where)
    else:
        name = match.group("secret")
        found = os.environ.get(name)
        if found is None:
            found = (store or CredentialStore()).get(name)
        if found is None:
            path = (store or CredentialStore()).path
            hint = (
                f"; Workbench kept it in the system's credential store: put it in {path} under the key '{name}'"
                if text.startswith("AzureMlSecret=")
                else ""
            )
            raise ConfigError(f"secret '{name}' is neither an environment variable nor in {path}{hint}", where)
    if 0 < len(found) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"secret '{name}' is {len(found)} character(s) long; amlrun refuses secrets shorter than "
            f"{MIN_SECRET_LENGTH} characters (it could not mask them in output without hiding the output)",
            where,
        )
    redactor.add(found)
    return found


def register_references(values, store: CredentialStore | None = None) -> int:
    """Resolve every secret reference among ``values`` for redaction only, ignoring the
    ones that cannot be resolved yet (the run that needs them reports that). Done when a
    command starts, so a value is masked even in output printed before a run resolves it."""
    count = 0
    store = store or CredentialStore()
    for value in values:
        if not is_reference(value):
            continue
        try:
            resolve(value, "", store)
            count += 1
        except ConfigError:
            continue
    return count


def project_references(config_dir: Path) -> list[str]:
    """Secret references in ``aml_config/*.runconfig`` and ``*.compute`` (files that
    mention none are not parsed)."""
    from amlrun.yamlfile import read_mapping

    found: list[str] = []
    if not config_dir.is_dir():
        return found
    for path in sorted([*config_dir.glob("*.runconfig"), *config_dir.glob("*.compute")]):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if "secret:" not in text and "env:" not in text and "AzureMlSecret=" not in text:
            continue
        try:
            data = read_mapping(path)
        except Exception:  # a malformed file is reported by whoever loads it for real
            continue
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
            elif is_reference(item):
                found.append(item)
    return found


def plugin():
    """The built-in ``secrets`` plugin (``amlrun.secrets:plugin`` in BUILTIN_PLUGINS).

    A factory, so that importing this module (the store does, for every record) does
    not import pluggy.
    """
    from amlrun.hookspec import hookimpl

    class SecretsPlugin:
        @hookimpl
        def amlrun_configure(self, config) -> None:
            """Register the project's secret values with the redactor as a command starts."""
            project = getattr(config, "project", None)
            if project is None:
                return
            try:
                register_references(project_references(project.config_dir))
            except ConfigError:
                pass  # e.g. a credentials file readable by others: the run that needs it says so

    return SecretsPlugin()
