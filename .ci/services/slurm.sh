#!/usr/bin/env bash
# SLURM for the slurm target's tests: slurm-wlm (slurmctld, slurmd, sbatch, squeue, ...)
# and munge from Debian's packages. Nothing is started or configured here: the tests
# start a private single-node cluster on 127.0.0.1 with their own munge key, slurm.conf
# and state folder (tests/slurm_fixture.py) and stop it at the end. Idempotent, fast when done.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
apt_install slurm-wlm munge
for tool in slurmctld slurmd sbatch squeue scancel scontrol sinfo munged; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || { echo "slurm.sh: $tool missing after install" >&2; exit 1; }
done
echo "slurm: slurm-wlm $(dpkg-query -W -f='${Version}' slurm-wlm), munge $(dpkg-query -W -f='${Version}' munge)"
