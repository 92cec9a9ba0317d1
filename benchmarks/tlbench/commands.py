"""Commands in the benchmark's project copy: timed line by line as their output streams, with peak RSS.

They run with the environment of tlpipe.testing (this venv first on PATH, the copy's
own src/ on PYTHONPATH), so the stages run the code DVC hashed in the copy.
"""

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tlpipe import testing
from tlpipe.errors import UserError

# The stage commands whose peak RSS is measured, each run alone.
RSS_COMMANDS = {
    "features": ("python", "-m", "tlpipe.stages.features"),
    "train@flatten": ("python", "-m", "tlpipe.stages.train", "flatten"),
    "train@gap": ("python", "-m", "tlpipe.stages.train", "gap"),
}

# On Linux a child's ru_maxrss starts from its parent's memory at spawn (vfork, then exec), and
# the benchmark holds TensorFlow: a small probe process spawns each command, waits for it and
# writes the command's own peak RSS (KiB) to the file named by its first argument.
RSS_PROBE = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
with open(sys.argv[1], "w") as file:
    file.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class TimedRun:
    seconds: float
    lines: list[tuple[float, str]]  # (seconds since start, line) of stdout and stderr together
    max_rss_mib: float  # the largest of the command and the descendants it waited for

    def stages_run(self) -> list[str]:
        return testing.stages_run("\n".join(line for _, line in self.lines))

    def stage_seconds(self) -> tuple[float, dict[str, float]]:
        """DVC's start-up (before the first stage) and each stage's time, from its `Running stage` line to the next."""
        starts = [(at, match.group(1)) for at, line in self.lines if (match := testing.RUNNING_STAGE.match(line))]
        ends = [at for at, _ in starts[1:]] + [self.seconds]
        return starts[0][0], {stage: end - at for (at, stage), end in zip(starts, ends)}


def timed_run(project: Path, *command: str) -> TimedRun:
    """Run `command` in the project; fail with its last lines unless it succeeds."""
    rss_file = project.parent / "peak_rss_kib"
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", RSS_PROBE, str(rss_file), *command], cwd=project,
                               env=testing.project_env(project), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in process.stdout]
    process.wait()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        tail = "\n".join(line for _, line in lines[-30:])
        raise UserError(f"`{' '.join(command)}` failed with status {process.returncode} in {project}:\n{tail}")
    return TimedRun(seconds, lines, int(rss_file.read_text()) / 1024)  # ru_maxrss is in KiB on Linux
