"""amlrun's entrypoint on a Ray node: ``python .amlrun_runtime/amlrun_ray_boot.py ARGV...``.

Runs with the cluster's Python and only its standard library (amlrun is not installed
there). Ray extracts a working directory once per node and lets every job of that package
run in it; this program

- copies it into a folder of the run's own beside it and runs there, so runs never see
  each other's files or ``outputs/`` (the folder is removed when the run ends);
- puts the run's variables in place: they come base64-encoded in ``AMLRUN_RAY_ENV``, since
  Ray would expand ``$VAR`` in the runtime env's own variables;
- completes the run's environment with paths only known here (``@AMLRUN_WORKDIR@`` in a
  variable's value is the working directory; ``AMLRUN_RAY_PYTHONPATH`` goes before
  ``PYTHONPATH``);
- reads the run's secret variables from the job's own small package (``AMLRUN_RAY_SECRETS``
  names it; it is on ``PYTHONPATH`` through the runtime env's ``py_modules``) and deletes
  the file, so secret values are never in the job's description;
- runs ARGV as a child (Ray's stop signals the whole process tree), passes its output on as
  UTF-8 (undecodable bytes replaced: Ray's log API fails on them), and exits with its exit
  status (a signal is re-raised, so Ray records the same death);
- copies ``outputs/`` to ``AMLRUN_RAY_OUTPUTS``: a folder amlrun made on a shared file
  system (written only if it exists here), or an ``outputsStorage`` location.
"""

import base64
import codecs
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

PLACEHOLDER = "@AMLRUN_WORKDIR@"
SECRETS_FILE = "amlrun_secrets.json"


def say(text):
    print("[amlrun] " + text, flush=True)


def complete_environment(env, workdir):
    for name, value in list(env.items()):
        if PLACEHOLDER in value:
            env[name] = value.replace(PLACEHOLDER, workdir)
    extra = env.pop("AMLRUN_RAY_PYTHONPATH", "")
    if extra:
        env["PYTHONPATH"] = extra + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for name in ("AMLRUN_OUTPUTS_DIR", "AMLRUN_SHARE_DIRECTORY"):
        if env.get(name):
            try:
                os.makedirs(env[name], exist_ok=True)
            except OSError as exc:
                say("cannot create %s=%s: %s" % (name, env[name], exc))


def load_environment(env):
    encoded = env.pop("AMLRUN_RAY_ENV", "")
    if encoded:
        values = json.loads(base64.b64decode(encoded).decode("ascii"))
        env.update(dict((str(k), str(v)) for k, v in values.items()))


def load_secrets(env):
    package = env.pop("AMLRUN_RAY_SECRETS", "")
    if not package:
        return
    for entry in env.get("PYTHONPATH", "").split(os.pathsep):
        if os.path.basename(entry.rstrip("/")) != package:
            continue
        for candidate in (os.path.join(entry, SECRETS_FILE), os.path.join(entry, package, SECRETS_FILE)):
            try:
                with open(candidate, encoding="utf-8") as fh:
                    values = json.load(fh)
            except OSError:
                continue
            try:
                os.unlink(candidate)    # one job, one read: nothing stays on the node's disk
            except OSError:
                pass
            env.update({str(k): str(v) for k, v in values.items()})
            return
    say("the run's secret variables were not found on this node (package %s)" % package)
    sys.exit(70)


def copy_tree(source, dest, refused):
    """Regular files and folders only: a link the script left is never followed."""
    os.makedirs(dest, exist_ok=True)
    for name in sorted(os.listdir(source)):
        path = os.path.join(source, name)
        if os.path.islink(path):
            refused.append(path)
        elif os.path.isdir(path):
            copy_tree(path, os.path.join(dest, name), refused)
        elif os.path.isfile(path):
            shutil.copyfile(path, os.path.join(dest, name))
        else:
            refused.append(path)


def deliver_outputs(outputs, spec):
    if not spec or not os.path.isdir(outputs) or not os.listdir(outputs):
        return
    kind, _, where = spec.partition(":")
    refused = []  # type: list[str]
    if kind == "shared":
        if not os.path.isdir(where):
            say("outputs/ not returned: this node does not share amlrun's file system "
                "(set outputsStorage in the compute file)")
            return
        copy_tree(outputs, os.path.join(where, "outputs"), refused)
    elif kind == "path":
        copy_tree(outputs, where, refused)
    else:
        try:
            import fsspec
        except ImportError:
            say("outputs/ not returned: outputsStorage %s needs fsspec on the cluster's nodes" % where)
            return
        fs, root = fsspec.core.url_to_fs(where)
        for dirpath, dirnames, filenames in os.walk(outputs):
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
            for name in filenames:
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    refused.append(path)
                    continue
                rel = os.path.relpath(path, outputs).replace(os.sep, "/")
                fs.put_file(path, root.rstrip("/") + "/" + rel)
    for path in refused:
        say("refused an output entry (a link or a special file): %s" % os.path.relpath(path, outputs))


def pump_utf8(fd, out):
    """Copy the script's output (stdout and stderr, in the order written) to ours as UTF-8,
    undecodable bytes replaced: Ray's job server answers HTTP 500 for a log it cannot decode."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        text = decoder.decode(chunk, final=not chunk)
        if text:
            out.write(text.encode("utf-8"))
            out.flush()
        if not chunk:
            os.close(fd)
            return


def private_copy(shared):
    """A fresh copy of the extracted snapshot for this run only."""
    runs = os.path.join(os.path.dirname(shared), ".amlrun-runs")
    os.makedirs(runs, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=os.path.basename(shared) + "-", dir=runs)
    shutil.copytree(shared, workdir, symlinks=True, dirs_exist_ok=True)
    return workdir


def main(argv):
    if not argv:
        say("no command given")
        return 64
    env = os.environ
    load_environment(env)
    load_secrets(env)
    shared = os.getcwd()
    workdir = private_copy(shared)
    os.chdir(workdir)
    if env.get("PYTHONPATH"):   # Ray put the shared folder there: the run's own copy instead
        env["PYTHONPATH"] = os.pathsep.join(workdir if p.rstrip("/") == shared else p
                                            for p in env["PYTHONPATH"].split(os.pathsep))
    complete_environment(env, workdir)
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)      # Ray signals the child too; wait for it, then deliver

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        say("cannot start %s: %s" % (argv[0], exc.strerror or exc))
        shutil.rmtree(workdir, ignore_errors=True)
        return 127
    assert child.stdout is not None  # stdout=PIPE
    pump_utf8(child.stdout.fileno(), sys.stdout.buffer)
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    try:
        deliver_outputs(os.path.join(workdir, "outputs"), env.get("AMLRUN_RAY_OUTPUTS", ""))
    except Exception as exc:  # the script's status matters more than its outputs
        say("outputs/ not returned: %s" % exc)
    finally:
        os.chdir(shared)
        shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.flush()
    if code < 0:   # die of the same signal, so Ray records the same death
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
