"""``amlrun attach TYPE -n NAME --address HOST ...``: add a compute target reached over SSH.

Writes ``aml_config/NAME.compute`` and ``NAME.runconfig`` as Workbench did. A password
(or key passphrase) never enters the project: it is prompted for (``--password`` without
a value) or read from stdin (``--password-stdin``), stored in the user's credentials file
(owner-only, outside the project) and the compute file holds ``secret:<key>``.
"""

from __future__ import annotations

import getpass
import os
import re
import sys

from amlrun.commands._common import parser as base_parser
from amlrun.errors import UsageError

TYPES = ("remotedocker", "remote", "cluster")
_PROMPT = object()
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def build_parser(prog: str):
    p = base_parser(prog, "Add a compute target reached over SSH (writes aml_config/NAME.compute and NAME.runconfig).")
    p.add_argument(
        "type", choices=TYPES, help="remotedocker: Docker on the VM; remote: the VM's Python; cluster: Spark"
    )
    p.add_argument("-n", "--name", required=True, help="the target's name (used with -c NAME)")
    p.add_argument("--address", required=True, help="host name or IP address of the VM")
    p.add_argument("--port", type=int, default=None, help="SSH port (default 22)")
    p.add_argument("--username", required=True, help="the login on the VM")
    auth = p.add_mutually_exclusive_group(required=True)
    auth.add_argument(
        "--password",
        nargs="?",
        const=_PROMPT,
        default=None,
        metavar="PASSWORD",
        help="log in with a password, prompted for (a value given here would stay in your "
        "shell history and the process list)",
    )
    auth.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    auth.add_argument("--private-key-file", metavar="FILE", help="log in with this private key")
    p.add_argument(
        "--passphrase",
        nargs="?",
        const=_PROMPT,
        default=None,
        metavar="PASSPHRASE",
        help="the private key's passphrase (without a value: prompted for)",
    )
    p.add_argument(
        "--python",
        dest="python_location",
        metavar="PATH",
        help="remote: the VM's interpreter (pythonLocation, default python3)",
    )
    p.add_argument("--base-docker-image", metavar="IMAGE", help="remotedocker: baseDockerImage")
    p.add_argument(
        "--known-hosts-file",
        metavar="FILE",
        help="known_hosts to check the VM's key against (default: $AMLRUN_KNOWN_HOSTS or ~/.ssh/known_hosts)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing target of that name")
    return p


def _secret(value, prompt: str, from_stdin: bool = False) -> str | None:
    if from_stdin:
        text = sys.stdin.readline().rstrip("\r\n")
        if not text:
            raise UsageError("--password-stdin: nothing on standard input")
        return text
    if value is _PROMPT:
        if not sys.stdin.isatty():
            raise UsageError(f"{prompt.rstrip(': ')}: no terminal to prompt on; use --password-stdin")
        text = getpass.getpass(prompt)
        if not text:
            raise UsageError("empty password")
        return text
    return value


def _secret_key(project, name: str, what: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_.\-]", "_", f"amlrun.{project.root.name}.{name}.{what}")
    return base


def _yaml_scalar(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("\n...").strip()


def _check_options(options) -> None:
    """UsageError for option values or combinations ``attach`` cannot use, before anything is written."""
    if not _NAME.match(options.name):
        raise UsageError(f"-n {options.name!r}: use letters, digits, '.', '_' and '-'")
    if options.port is not None and not 0 < options.port < 65536:
        raise UsageError(f"--port {options.port}: not a TCP port")
    if options.type == "remotedocker" and not options.base_docker_image:
        raise UsageError(
            "remotedocker needs --base-docker-image IMAGE (the image environments are built on, "
            "present on the VM's Docker engine)"
        )
    if options.passphrase is not None and not options.private_key_file:
        raise UsageError("--passphrase goes with --private-key-file")


def _credential_fields(options, project, store) -> dict[str, object]:
    """The key file or password fields; a secret goes into ``store`` and the file gets its ``secret:`` reference."""
    from amlrun.secrets import redactor

    if options.private_key_file:
        key = os.path.abspath(os.path.expanduser(options.private_key_file))
        if not os.path.isfile(key):
            raise UsageError(f"--private-key-file {options.private_key_file}: no such file")
        fields: dict[str, object] = {"privateKeyFile": key}
        passphrase = _secret(options.passphrase, "passphrase of the private key: ")
        if passphrase:
            redactor.add(passphrase)
            ref = _secret_key(project, options.name, "passphrase")
            store.put(ref, passphrase)
            fields["passphrase"] = f"secret:{ref}"
        return fields
    if options.password not in (None, _PROMPT):
        print(
            "amlrun attach: warning: a password given on the command line stays in your shell history "
            "and is visible to other users in the process list; prefer --password alone (prompt) or "
            "--password-stdin",
            file=sys.stderr,
        )
    password = _secret(options.password, f"password of {options.username}@{options.address}: ", options.password_stdin)
    if not password:  # only `--password ""` gets here: the prompt and stdin refuse an empty one
        raise UsageError("--password: empty password")
    redactor.add(password)
    ref = _secret_key(project, options.name, "password")
    store.put(ref, password)
    return {"password": f"secret:{ref}"}


def _compute_fields(options, credentials: dict[str, object]) -> dict[str, object]:
    """The ``.compute`` file's keys, in the order they are written."""
    fields: dict[str, object] = {"type": options.type, "address": options.address}
    if options.port is not None:
        fields["port"] = options.port
    fields["username"] = options.username
    fields.update(credentials)
    if options.known_hosts_file:
        fields["knownHostsFile"] = os.path.abspath(os.path.expanduser(options.known_hosts_file))
    if options.python_location:
        fields["pythonLocation"] = options.python_location
    if options.base_docker_image:
        fields["baseDockerImage"] = options.base_docker_image
    if options.type == "remotedocker":
        fields.setdefault("sharedVolumes", True)
        fields["nativeSharedDirectory"] = "~/.azureml/share/"
    return fields


def _write_files(options, project, compute_path, runconfig_path, fields: dict[str, object]) -> None:
    """Write the ``.compute`` (no secret in it) and a ``.runconfig`` that runs on it."""
    framework = "PySpark" if options.type == "cluster" else "Python"
    project.config_dir.mkdir(parents=True, exist_ok=True)
    compute_path.write_text(
        f"# compute target '{options.name}', written by amlrun attach (no secret in this file)\n"
        + "".join(f"{k}: {_yaml_scalar(v)}\n" for k, v in fields.items()),
        encoding="utf-8",
    )
    runconfig_path.write_text(
        f'ArgumentVector:\n  - "$file"\nTarget: {options.name}\nEnvironmentVariables: {{}}\n'
        f"Framework: {framework}\nCondaDependenciesFile: aml_config/conda_dependencies.yml\n"
        "SparkDependenciesFile: aml_config/spark_dependencies.yml\nPrepareEnvironment: true\nTrackedRun: true\n",
        encoding="utf-8",
    )


def main(argv: list[str], prog: str) -> int:
    from amlrun.commands._common import load_config
    from amlrun.secrets import CredentialStore

    options = build_parser(prog).parse_args(argv)
    _check_options(options)
    config = load_config(options)
    project = config.project
    compute_path = project.config_dir / f"{options.name}.compute"
    runconfig_path = project.config_dir / f"{options.name}.runconfig"
    if not options.force:
        for path in (compute_path, runconfig_path):
            if path.exists():
                raise UsageError(f"{project.relative(path)} exists; pass --force to replace it")
    store = CredentialStore()
    fields = _compute_fields(options, _credential_fields(options, project, store))
    _write_files(options, project, compute_path, runconfig_path, fields)
    print(f"wrote {project.relative(compute_path)} and {project.relative(runconfig_path)}")
    if "password" in fields or "passphrase" in fields:
        print(
            f"the secret is in {store.path} (owner-only), referenced as "
            f"{fields.get('password') or fields.get('passphrase')}"
        )
    print(f"check it with: amlrun doctor -c {options.name}")
    return 0
