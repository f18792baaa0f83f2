"""The processes ``fedmist deploy supernode`` runs on a SuperNode machine, start-up paid once.

Flower 1.42 runs one ``flwr-clientapp`` process *per message*: with ``--isolation subprocess``
(the default) the SuperNode starts ``flower-superexec``, which polls the SuperNode's Runtime API
every second (``AcquireTask``) and starts ``flwr-clientapp --token T`` for each task; that process
pulls one message, runs the ClientApp, pushes the reply and exits (``run_clientapp`` ends in
``flwr_exit``). Every message so paid the torch import, torch._dynamo's on the first optimiser step
and the dataset load (~5 s on the 2-core test machine), against ~0.2 s of MIST work per message.

``--isolation process`` is Flower's hook for running task processes outside the SuperNode: the
SuperNode then starts nothing and serves the same Runtime API to whatever process acquires its
tasks. ``clientapp`` below is such a process, started once next to the SuperNode and kept alive:
it acquires each ClientApp task and runs it *in this process* with Flower's own steps
(``pull_task_input``, ClientApp loading from the installed FAB, ``push_message``,
``push_task_output``, a task heartbeat), so module-level caches (the ``get_workspace`` dataset,
imported torch and model code) stay warm. Flower's contract is kept: a raising handler becomes
an ``Error`` reply, a hanging one keeps heartbeating while the server's ``round_timeout`` runs.
A task that arrives while the warm one is busy, or that belongs to a different FAB (changed code),
goes to a cold ``flwr-clientapp`` process exactly as SuperExec would start it; after a new FAB the
process re-executes itself once idle, so new code is never run with old modules.

``supernode`` runs ``flower-supernode`` itself with one change: its idle poll of the SuperLink
(``time.sleep(3)`` between empty ``PullMessages``) and its wait for a reply (0.5 s steps) become a
short back-off that restarts at 20 ms after every message and, for a minute after a message,
grows to at most 0.5 s (``FEDMIST_SUPERNODE_ACTIVE_CAP``; then up to Flower's 3 s). With warm
ClientApps the 3 s poll would otherwise be most of a MIST round. Set ``FEDMIST_SUPERNODE_POLL=0``
to keep Flower's sleeps.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time

MARK = "fedmist-clientapp:"  # prefix of this process's log lines (tests count "served")
FIRST_POLL_S = float(os.environ.get("FEDMIST_SUPERNODE_POLL", "0.02"))  # 0 = Flower's own sleeps
MAX_ACQUIRE_POLL_S = 0.5  # the ClientApp process's slowest poll for tasks when idle
BACKOFF = 1.5
# Within a run the next message comes seconds after the last one, and the back-off would have
# grown to ~1/3 of the gap (up to 3 s): for ACTIVE_WINDOW_S after a message, the SuperNode polls
# the SuperLink at least every ACTIVE_POLL_CAP_S and the ClientApp process its SuperNode at least
# every ACTIVE_ACQUIRE_CAP_S; after that they slow down to 3 s / MAX_ACQUIRE_POLL_S.
ACTIVE_WINDOW_S = 60.0
ACTIVE_POLL_CAP_S = float(os.environ.get("FEDMIST_SUPERNODE_ACTIVE_CAP", "0.5"))  # 3 = no active cap
ACTIVE_ACQUIRE_CAP_S = float(os.environ.get("FEDMIST_CLIENTAPP_ACTIVE_CAP", "0.1"))  # 0.5 = no active cap


class Backoff:
    """Poll intervals: ``first``, growing ``BACKOFF`` times per idle poll up to ``cap``; ``reset``
    after activity. For ``active_window`` seconds after a reset the intervals stop growing at
    ``active_cap`` instead (a run's next message comes within seconds; an idle node polls slowly)."""

    def __init__(self, first: float, cap: float, active_cap: float | None = None, active_window: float = 0.0) -> None:
        self.first, self.cap, self.current = first, cap, first
        self.active_cap = cap if active_cap is None else min(active_cap, cap)
        self.active_window = active_window
        self.last_reset = float("-inf")

    def reset(self) -> None:
        self.current = self.first
        self.last_reset = time.monotonic()

    def next(self, cap: float | None = None) -> float:
        limit = self.cap if cap is None else cap
        if time.monotonic() - self.last_reset < self.active_window:
            limit = min(limit, self.active_cap)
        value = min(self.current, limit)
        self.current = min(self.current * BACKOFF, self.cap)
        return value


# --------------------------------------------------------------------------- SuperNode

def patch_supernode_polling(first: float = FIRST_POLL_S) -> bool:
    """Make ``flwr.supernode.start_client_internal`` poll with a back-off instead of fixed sleeps;
    False (and no change) when ``first`` is 0 or this Flower lacks what is patched."""
    if first <= 0:
        return False
    import flwr.supernode.start_client_internal as sci

    real_time = getattr(sci, "time", None)
    pull = getattr(sci, "_pull_and_store_message", None)
    if real_time is None or not callable(getattr(real_time, "sleep", None)) or not callable(pull):
        return False
    backoff = Backoff(first, 3.0, ACTIVE_POLL_CAP_S, ACTIVE_WINDOW_S)

    class _Time:
        """``time`` for that module only: ``sleep`` waits the back-off, never longer than asked."""

        def __getattr__(self, name: str):
            return getattr(real_time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            if seconds >= 3:  # idle: no message from the SuperLink
                real_time.sleep(backoff.next(seconds))
            else:  # waiting for a reply in local state, or for an object: cheap, no network
                real_time.sleep(min(seconds, first))

    def pull_and_store(*args, **kwargs):
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            backoff.reset()
        return run_id

    sci.time = _Time()
    sci._pull_and_store_message = pull_and_store
    # The SuperLink can hand out a message before the ServerApp pushed all its objects; Flower's
    # pull then waits 1 s, 2 s, ... between tries. Retry sooner (capped at 0.5 s).
    if callable(objects := getattr(sci, "pull_objects", None)):
        sci.pull_objects = functools.partial(objects, initial_backoff=first, backoff_cap=0.5)
    return True


def supernode_main(argv: list[str]) -> None:
    """``flower-supernode`` with ``argv``, its polling patched."""
    from flwr.supernode.cli import flower_supernode

    patch_supernode_polling()
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


# --------------------------------------------------------------------------- ClientApp process

# A task can be acquired before the SuperNode has stored its message's objects (it creates the
# task first, then pulls them from the SuperLink). Flower's pull then retries after 1 s, 2 s, ...
# which a per-message process, started ~5 s after the task, never hit; a warm one does.
OBJECT_RETRY_S, OBJECT_RETRY_CAP_S = 0.02, 0.5
# Flower's ``install_from_fab`` extracts the whole FAB to a temporary directory and checks every
# file's hash before it sees that the app is installed already: every message of a warm process paid
# that (~1/4 of its CPU with no training to do). The warm process installs each FAB hash once (the
# hash names the content). FEDMIST_FAB_REINSTALL=1 keeps Flower's install on every message.
FAB_REINSTALL = os.environ.get("FEDMIST_FAB_REINSTALL", "") not in ("", "0")


def pull_task_input(client):
    """``flwr.supernode.runtime.run_clientapp.pull_task_input`` with a short retry for objects
    the SuperNode is still receiving (the only difference)."""
    from flwr.app import Message
    from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
    from flwr.proto.node_pb2 import Node  # pylint: disable=no-name-in-module
    from flwr.proto.runtime_pb2 import PullAppMessagesRequest, PullTaskInputRequest  # pylint: disable=no-name-in-module
    from flwr.supercore.inflatable.inflatable_protobuf_utils import (
        make_confirm_message_received_fn_protobuf,
        make_pull_object_fn_protobuf,
    )
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
    from flwr.supercore.task_identity import TaskIdentity

    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    run = run_from_proto(res.run)
    fab = fab_from_proto(res.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("No messages received from Runtime API")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message, initial_backoff=OBJECT_RETRY_S, backoff_cap=OBJECT_RETRY_CAP_S,
    )
    message.metadata.__dict__["_message_id"] = tree.object_id  # the deflated message lacks its own id
    return message, context, run, fab


def _log(msg: str) -> None:
    print(f"{MARK} {msg}", flush=True)


class WarmClientApp:
    """Acquires ClientApp tasks from one SuperNode's Runtime API and runs them in this process."""

    def __init__(self, address: str, parent_pid: int | None) -> None:
        self.address = address
        self.parent_pid = parent_pid
        self.fab_hash: str | None = None  # FAB whose modules this process imported
        self.restart = False  # a different FAB arrived: re-execute once idle
        self.busy = threading.Event()
        self.tasks: list[str] = []
        self.ready = threading.Condition()
        self.cold: list[subprocess.Popen] = []
        self.served = 0
        self.installed: set[str] = set()  # FAB hashes installed by this process

    # The warm thread: one task at a time, imports and caches kept between tasks.
    def worker(self) -> None:
        while True:
            with self.ready:
                while not self.tasks:
                    self.ready.wait()
                token = self.tasks.pop(0)
            try:
                self.run_task(token)
            except Exception as err:  # noqa: BLE001 - never let the warm thread die
                _log(f"task failed outside the ClientApp: {err!r}")
            finally:
                self.busy.clear()

    def run_task(self, token: str) -> None:
        """Flower's ``run_clientapp`` for one token, minus the exit at the end."""
        from flwr.app import Message
        from flwr.app.error import Error
        from flwr.cli.install import install_from_fab
        from flwr.clientapp.client_app import LoadClientAppError
        from flwr.clientapp.utils import get_load_client_app_fn
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
        from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient
        from flwr.supercore.runtime.tracing import RuntimeTracingInterceptor
        from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

        t0 = t_in = t_app = time.perf_counter()
        retry = make_simple_http_retry_invoker()
        client = RuntimeHttpClient.from_server_address(
            server_address=self.address, insecure=True, root_certificates=None, retry_invoker=retry,
            interceptors=[RuntimeTracingInterceptor(), RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                          RuntimeTokenHttpInterceptor(token)])
        heartbeat = None
        message = reply = context = None
        sub_status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        try:
            heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
            heartbeat.start()
            message, context, run, fab = pull_task_input(client)
            t_in = time.perf_counter()
            if FAB_REINSTALL or fab.hash_str not in self.installed:
                install_from_fab(fab.content, skip_prompt=True)  # extracts and verifies the whole FAB
                self.installed.add(fab.hash_str)
                _log(f"installed FAB {fab.hash_str[:12]} in process {os.getpid()}")
            load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
            app = load(run.fab_id, run.fab_version, fab.hash_str)
            reply = app(message=message, context=context)
            t_app = time.perf_counter()
            sub_status, details = SubStatus.COMPLETED, ""
        except Exception as ex:  # noqa: BLE001 - as Flower's run_clientapp: the error becomes the reply
            code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION if isinstance(ex, LoadClientAppError) \
                else ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            reason = ("An exception was raised when attempting to load `ClientApp`"
                      if isinstance(ex, LoadClientAppError) else f"{type(ex)}:<'{ex}'>")
            _log(f"ClientApp raised an exception: {ex!r}")
            sub_status, details = SubStatus.FAILED, reason
            if message is not None:
                reply = Message(Error(code=code, reason=reason), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    try:
                        push_message(client, reply, context)
                    except Exception as ex:  # noqa: BLE001
                        _log(f"failed to push the reply: {ex!r}")
                retry.max_tries = 1
                push_task_output(client=client, context=context, sub_status=sub_status, details=details)
            finally:
                if heartbeat is not None and heartbeat.is_running:
                    heartbeat.stop()
                client.close()
        self.served += 1
        kind = message.metadata.message_type if message is not None else "?"
        t_end = time.perf_counter()
        _log(f"served {kind} message {self.served} in process {os.getpid()} ({t_end - t0:.2f} s: pull "
             f"{t_in - t0:.2f}, app {max(t_app - t_in, 0):.2f}, push {t_end - max(t_app, t_in):.2f}; {sub_status})")

    def launch_cold(self, token: str) -> None:
        """What SuperExec's subprocess executor does for a task: one ``flwr-clientapp`` process."""
        from fedmist.deploy.connection import flwr_exe

        self.cold = [p for p in self.cold if p.poll() is None]
        self.cold.append(subprocess.Popen([flwr_exe("flwr-clientapp"), "--runtime-api-address", self.address,
                                           "--token", token, "--insecure", "--parent-pid", str(os.getpid())]))

    def loop(self) -> None:
        from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=no-name-in-module
        from flwr.supercore.constant import TaskType
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient

        retry = make_simple_http_retry_invoker()
        retry.max_tries = 1  # the loop retries itself
        client = RuntimeHttpClient.from_server_address(
            server_address=self.address, insecure=True, root_certificates=None, retry_invoker=retry,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")])
        threading.Thread(target=self.worker, name="warm-clientapp", daemon=True).start()
        backoff = Backoff(0.01, MAX_ACQUIRE_POLL_S, ACTIVE_ACQUIRE_CAP_S, ACTIVE_WINDOW_S)
        connected = False
        while True:
            if self.restart and not self.busy.is_set():
                _log("a new FAB (app code) arrived: restarting this process to load it")
                client.close()
                os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
            try:
                res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
            except Exception:  # noqa: BLE001 - the SuperNode is (re)starting
                connected = False
                time.sleep(0.5)
                continue
            if not connected:
                connected = True
                _log(f"process {os.getpid()} takes ClientApp tasks from the SuperNode at {self.address}")
            if res.HasField("task") and res.token:
                backoff.reset()
                fab_hash = res.task.fab_hash or None
                if self.busy.is_set() or (self.fab_hash is not None and fab_hash not in (None, self.fab_hash)):
                    if fab_hash != self.fab_hash:
                        self.restart = True
                    self.launch_cold(res.token)
                else:
                    self.fab_hash = self.fab_hash or fab_hash
                    self.busy.set()
                    with self.ready:
                        self.tasks.append(res.token)
                        self.ready.notify()
            elif self.busy.is_set():
                time.sleep(0.05)  # the SuperNode sends one message at a time: nothing new while busy
            else:
                time.sleep(backoff.next())


def _exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def clientapp_main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m fedmist.deploy.runtime clientapp",
                                 description="Long-lived ClientApp process for one SuperNode (--isolation process).")
    ap.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API, HOST:PORT")
    ap.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit)
    if args.parent_pid is not None:
        from flwr.supercore.app_utils import start_parent_process_monitor

        start_parent_process_monitor(args.parent_pid)  # SIGINT to this process when the parent is gone
    # Warm the imports every task needs (environment packages only; the app's own modules come
    # from the FAB with the first task).
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (imported by the first optimiser step otherwise)

    try:
        WarmClientApp(args.runtime_api_address, args.parent_pid).loop()
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("supernode", "clientapp"):
        raise SystemExit("usage: python -m fedmist.deploy.runtime {supernode|clientapp} ARGS...")
    (supernode_main if sys.argv[1] == "supernode" else clientapp_main)(sys.argv[2:])


if __name__ == "__main__":
    main()
