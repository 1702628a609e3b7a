"""Ray worker setup hook for tests/test_build_ray.py: once the test "arms" it (creates the file
named by DATAPREP_TEST_KILL_ARM), the first build task to claim the file kills its own worker
process (SIGKILL), as an out-of-memory kill or a lost node would, so Ray must retry the task."""

import os
import signal


def install() -> None:
    import dataprep.build.read as read

    original = read.process_file

    def process_file(part, **kwargs):
        arm = os.environ.get("DATAPREP_TEST_KILL_ARM")
        if arm:
            try:
                os.rename(arm, arm + ".fired")  # atomic: exactly one task claims it
            except FileNotFoundError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(part, **kwargs)

    read.process_file = process_file
