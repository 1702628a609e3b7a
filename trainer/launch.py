"""Starting ranks and joining process groups: a small `torchrun --standalone`; the TP x DP layout.

The one place that starts ranks, for `train`, `generate` and the memory measurement of
`train --dry-run`:

- `launch_local(nproc, target, payload, report_errors=True)` starts `nproc` local processes the
  way torchrun does (env RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1,
  MASTER_PORT = a free port), each calling `target()` (a "module:function" string). If one rank
  exits non-zero the others are terminated, so a dying rank never leaves the rest waiting in a
  collective; Ctrl-C or SIGTERM of the driver stops them all the same way.
- `target` is in effect `return rank_main(work, name=...)`: `rank_main` sets up the rank's
  logging (`[rank N]`, INFO from rank 0 only), calls `work(payload)`, and sends a
  `DataprepError` back to the driver, which raises it once there (so the command line prints it
  with its flags, one line, the error's exit code).
- `torchrun_rank()` is the same for a process torchrun started: its place in the job, with the
  rank's logging set up (None when this process was started alone).

`setup_distributed(tp)` joins the launched group (gloo on CPU, NCCL on GPU, with a timeout) and
splits world = TP x DP with TP groups of consecutive ranks, as Megatron does. World size 1 makes no
process group."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dataprep.errors import ConfigError, DataprepError, UsageError
from dataprep.signals import die_with_parent

log = logging.getLogger(__name__)

PAYLOAD_ENV = "DATAPREP_LAUNCH_PAYLOAD"
# where each rank leaves `rank<N>.done` once its work is over, just before the process group is
# destroyed: gloo sometimes aborts a rank (SIGABRT, "terminate called without an active
# exception") while tearing down after all work succeeded; a rank's DataprepError is left there
# too (`rank<N>.error`, pickled) when the driver asked for it (REPORT_ENV)
DONE_DIR_ENV = "DATAPREP_LAUNCH_DONE_DIR"
REPORT_ENV = "DATAPREP_LAUNCH_REPORT_ERRORS"
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True, slots=True)
class DistEnv:
    """What torchrun (or `launch_local`) told this process about its place in the job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def dist_env() -> DistEnv | None:
    """The launcher's environment, or None when this process was started alone."""
    if not all(v in os.environ for v in _TORCHRUN_VARS):
        return None
    try:
        rank, world, local = (int(os.environ[v]) for v in _TORCHRUN_VARS)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError as e:
        raise UsageError(
            f"bad torchrun environment {[os.environ[v] for v in _TORCHRUN_VARS]}: {e}"
        ) from e
    return DistEnv(rank, world, local, local_world)


def torchrun_rank() -> DistEnv | None:
    """This process's place in a job torchrun started, its log lines then tagged `[rank N]`;
    None when this process was started alone (logging is left as it is)."""
    env = dist_env()
    if env is not None:
        configure_rank_logging(env.rank)
    return env


def configure_rank_logging(rank: int | None = None) -> int:
    """Log lines tagged `[rank N]`; INFO from rank 0 only, warnings and errors from every rank."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(levelname)s [rank {rank}] %(name)s: %(message)s",
    )
    return rank


def rank_main(work: Callable[[str], int | None], *, name: str) -> int:
    """The body of a rank `launch_local` started: rank logging, then `work(payload)`; an exit code.

    A `DataprepError` goes back to the driver when it asked for it (`report_errors`), which raises
    it; otherwise (the driver is not ours to ask) it is printed as `NAME: error [rank N]: ...`.
    """
    rank = configure_rank_logging()
    try:
        return int(work(os.environ.get(PAYLOAD_ENV, "")) or 0)
    except DataprepError as e:
        if not _report_error(rank, e):
            print(f"{name}: error [rank {rank}]: {e}", file=sys.stderr, flush=True)
        return e.exit_code


def _report_error(rank: int, error: DataprepError) -> bool:
    """Leave `error` for the driver (see REPORT_ENV); whether it was left."""
    done_dir = os.environ.get(DONE_DIR_ENV)
    if not (done_dir and os.environ.get(REPORT_ENV) == "1"):
        return False
    path = os.path.join(done_dir, f"rank{rank}.error")
    try:
        data = pickle.dumps(error)
        pickle.loads(data)  # an error class whose __init__ cannot take its args back fails here
    except Exception:  # keep its text and its exit code
        data = pickle.dumps((UsageError if error.exit_code == 2 else DataprepError)(str(error)))
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)  # whole, or not there
    return True


def _reported_error(done_dir: str, first: int, nproc: int) -> DataprepError | None:
    """The error rank `first` left (else the lowest rank's that left one), or None."""
    for rank in [first, *range(nproc)]:
        path = os.path.join(done_dir, f"rank{rank}.error")
        if os.path.exists(path):
            with open(path, "rb") as f:
                return pickle.load(f)  # written by our own ranks, in our own private directory
    return None


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child before exec (Linux only; elsewhere a no-op)
    die_with_parent(signal.SIGTERM)


def launch_local(
    nproc: int,
    target: str,
    payload: str,
    *,
    threads_per_rank: int | None = None,
    poll_s: float = 0.05,
    grace_s: float = 5.0,
    check: Callable[[], None] | None = None,
    report_errors: bool = False,
) -> int:
    """Run `target` ("module:function" returning an exit code) in `nproc` local ranks; an exit code.

    The first rank to fail decides the code; the others get SIGTERM, then SIGKILL after `grace_s`.
    With `report_errors`, the `DataprepError` that failed a rank (see `rank_main`) is raised here
    instead. An interruption of this process (KeyboardInterrupt, dataprep.signals.Terminated)
    stops every rank the same way and is re-raised. `check()` runs in this process before any rank
    starts; if it raises, none is started.
    """
    if nproc < 1:
        raise ConfigError(f"{{nproc_per_node}} must be >= 1, got {nproc}", "nproc_per_node")
    if check is not None:  # before any rank starts: a bad run fails once, in this process
        check()
    if threads_per_rank is None:
        threads_per_rank = max(1, (os.cpu_count() or 1) // nproc)
    done_dir = tempfile.mkdtemp(prefix="dataprep-launch-")
    procs: list[subprocess.Popen] = []
    try:
        try:
            env = {"OMP_NUM_THREADS": str(threads_per_rank), PAYLOAD_ENV: payload,
                   DONE_DIR_ENV: done_dir, REPORT_ENV: "1" if report_errors else ""}  # fmt: skip
            _start(procs, nproc, target, env)
            rank, failed, others_running = _wait(procs, done_dir, poll_s)
        except BaseException:  # Ctrl-C / SIGTERM (dataprep.signals) too: stop the ranks, re-raise
            _stop(procs, grace_s)
            raise
        if failed == 0:
            return 0
        error = _reported_error(done_dir, rank, nproc) if report_errors else None
        if others_running and error is None:
            log.error("rank %d exited with code %d; stopping the other ranks", rank, failed)
        _stop(procs, grace_s)
        if error is None:  # the rank that failed first may have been stopped before reporting
            error = _reported_error(done_dir, rank, nproc) if report_errors else None
        if error is not None:
            raise error
        return failed if failed > 0 else 1
    finally:
        shutil.rmtree(done_dir, ignore_errors=True)


def _start(procs: list[subprocess.Popen], nproc: int, target: str, extra: dict[str, str]) -> None:
    """Start the ranks as torchrun does, into `procs` (so the caller can stop those started)."""
    module, _, func = target.partition(":")
    code = f"import sys, {module} as m; sys.exit(m.{func}())"
    port = find_free_port()
    for rank in range(nproc):
        env = dict(os.environ)
        env.update(
            {
                "RANK": str(rank),
                "WORLD_SIZE": str(nproc),
                "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": str(nproc),
                "GROUP_RANK": "0",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                **extra,
            }
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                env=env,
                preexec_fn=_die_with_parent if os.name == "posix" else None,
            )
        )


def _wait(procs: list[subprocess.Popen], done_dir: str, poll_s: float) -> tuple[int, int, bool]:
    """Poll the ranks until all succeeded, (0, 0, False), or one failed: (its rank, its exit
    code, whether other ranks are still running)."""
    forgiven: set[int] = set()
    while True:
        codes = [p.poll() for p in procs]
        for r, c in enumerate(codes):
            if _aborted_after_done(c, r, done_dir):
                codes[r] = 0
                if r not in forgiven:
                    forgiven.add(r)
                    log.warning(
                        "rank %d aborted while tearing down the process group, after finishing "
                        "its work (a known gloo teardown crash); its results are complete",
                        r,
                    )
        bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
        if bad:
            return (*bad[0], any(c is None for c in codes))
        if all(c == 0 for c in codes):
            return 0, 0, False
        time.sleep(poll_s)


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _aborted_after_done(code: int | None, rank: int, done_dir: str) -> bool:
    """Whether a rank died of SIGABRT after marking its work done (see DONE_DIR_ENV)."""
    return code == -signal.SIGABRT and os.path.exists(os.path.join(done_dir, f"rank{rank}.done"))


def mark_done(rank: int) -> None:
    """Tell `launch_local` (if it started this rank) that this rank's work is complete."""
    done_dir = os.environ.get(DONE_DIR_ENV)
    if done_dir:
        with open(os.path.join(done_dir, f"rank{rank}.done"), "w") as f:
            f.write("ok\n")


@dataclass(frozen=True)
class Layout:
    """This rank's place in world = TP x DP (TP groups are consecutive ranks)."""

    rank: int = 0
    world_size: int = 1
    tp_size: int = 1
    tp_rank: int = 0
    dp_size: int = 1
    dp_rank: int = 0
    tp_group: Any = None  # torch ProcessGroup; None when tp_size == 1
    dp_group: Any = None  # torch ProcessGroup; None when dp_size == 1
    device: Any = None  # torch.device
    distributed: bool = False  # a process group exists

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def check_world(world_size: int, tp_size: int) -> int:
    """DP size for a world; a UsageError when TP does not divide it."""
    if tp_size < 1:
        raise ConfigError(
            f"{{tensor_model_parallel_size}} must be >= 1, got {tp_size}",
            "tensor_model_parallel_size",
        )
    if world_size % tp_size:
        raise ConfigError(
            f"world size {world_size} is not divisible by {{tensor_model_parallel_size}} "
            f"{tp_size}: start a multiple of {tp_size} ranks (e.g. {{nproc_per_node}} {tp_size})",
            "tensor_model_parallel_size",
            "nproc_per_node",
        )
    return world_size // tp_size


def device_type() -> str:
    """The device type this process trains on: "cuda" whenever torch sees a GPU, else "cpu".

    `setup_distributed` picks the device by this rule, and the batch loader decides by it
    whether to stage batches in pinned memory, so the two cannot disagree.
    """
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def setup_distributed(
    tp_size: int, *, timeout_s: float = 600.0, env: DistEnv | None = None
) -> Layout:
    """Join the launched process group (if any) and build the TP and DP groups.

    On GPUs: rank with local rank r uses device r % device_count and the group is NCCL's;
    on CPU it is gloo's.
    """
    import torch

    env = env if env is not None else dist_env()
    world = env.world_size if env else 1
    rank = env.rank if env else 0
    dp_size = check_world(world, tp_size)
    cuda = device_type() == "cuda"
    if cuda:
        local = env.local_rank if env else 0
        torch.cuda.set_device(local % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    if world == 1:
        return Layout(device=device)

    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    tp_group = dp_group = None
    for start in range(0, world, tp_size):  # every rank must create every group, in the same order
        ranks = list(range(start, start + tp_size))
        g = dist.new_group(ranks) if tp_size > 1 else None
        if rank in ranks:
            tp_group = g
    for tp_rank in range(tp_size):
        ranks = list(range(tp_rank, world, tp_size))
        g = dist.new_group(ranks) if dp_size > 1 else None
        if rank in ranks:
            dp_group = g
    return Layout(
        rank=rank,
        world_size=world,
        tp_size=tp_size,
        tp_rank=rank % tp_size,
        dp_size=dp_size,
        dp_rank=rank // tp_size,
        tp_group=tp_group,
        dp_group=dp_group,
        device=device,
        distributed=True,
    )


def teardown_distributed(layout: Layout) -> None:
    """Barrier, then destroy the group (a destroy without the barrier sometimes aborts a rank)."""
    if not layout.distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.barrier()
            mark_done(layout.rank)
        finally:
            dist.destroy_process_group()
