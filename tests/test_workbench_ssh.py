"""A Workbench sample whose VM cannot be reached: ``--collect-only`` and a real run say so
in one line, with one connection attempt and no paramiko traceback; a compute file
without ``address`` is an error naming the file."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

#: the remotedocker target `az ml computetarget attach remotedocker` wrote (Iris sample's readme)
MYVM = """\
type: "remotedocker"
baseDockerImage: "microsoft/mmlspark:plus-0.9.9"
address: "127.0.0.1"
port: {port}
username: "ldsvmadmin"
password: "AzureMlSecret=myvm#ldsvmadmin#2fcf0f4c1a0b4a9e"
sharedVolumes: true
nativeSharedDirectory: "~/.azureml/share/"
"""


class NotSSH:
    """A real TCP server on 127.0.0.1 that answers like a web server, not an SSH server
    (what a VM's wrong port or a proxy in the way looks like); counts connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(20)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            except OSError:
                pass
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def not_ssh():
    server = NotSSH()
    yield server
    server.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _project(project, port: int):
    creds = Path(os.environ["AMLRUN_CREDENTIALS"])
    creds.write_text('"myvm#ldsvmadmin#2fcf0f4c1a0b4a9e": not-the-password\n')
    creds.chmod(0o600)
    project.write({"aml_config/myvm.compute": MYVM.format(port=port), "train.py": "print('hi')\n"})
    return project


def test_collect_only_against_a_non_ssh_port_is_one_line_and_one_connection(project, not_ssh):
    result = _project(project, not_ssh.port).run("-c", "myvm", "--collect-only")
    assert "Traceback" not in result.output and "paramiko" not in result.output, result.output
    assert "environment unknown (ldsvmadmin@127.0.0.1:%d: SSH error: Error reading SSH protocol banner" % not_ssh.port \
        in result.stdout
    assert not_ssh.connections == 1


def test_a_run_against_a_non_ssh_port_is_one_line_and_one_connection(project, not_ssh):
    result = _project(project, not_ssh.port).run("-c", "myvm", "train.py")
    assert result.returncode != 0
    assert "Traceback" not in result.output and "paramiko" not in result.output, result.output
    assert result.output.count("Error reading SSH protocol banner") == 2   # the cell's line and the summary's
    assert not_ssh.connections == 1


def test_an_unreachable_vm_is_one_line(project):
    port = _closed_port()
    for args in (("--collect-only",), ("train.py",)):
        result = _project(project, port).run("-c", "myvm", *args)
        assert "Traceback" not in result.output, result.output
        assert f"ldsvmadmin@127.0.0.1:{port}: cannot connect" in result.output
        assert "retrying" not in result.output


@pytest.mark.parametrize("kind", ["remotedocker", "remote"])
def test_a_compute_file_without_address_names_the_file(project, kind):
    project.write({"aml_config/myvm.compute": f'type: "{kind}"\nusername: "ldsvmadmin"\n'
                                              'password: "AzureMlSecret=myvm#ldsvmadmin#2fcf"\n',
                   "train.py": "print('hi')\n"})
    for args in (("--collect-only",), ("train.py",), ):
        result = project.run("-c", "myvm", *args)
        assert result.returncode == 4
        assert result.stderr.strip() == (f"amlrun: error: aml_config/myvm.compute: 'address' is missing: a {kind} "
                                         "target is reached over SSH (address: host or IP of the VM)")
    assert project.run("doctor", "-c", "myvm").returncode == 4
