"""Warm Jupyter kernels for the study runner: one per worker thread, reused across notebooks.

A fresh kernel costs every notebook a kernel start plus the import of torch, torchvision and
covtl, about 5 s on an idle 2-core machine and 8-12 s on a busy one, which is most of a
smoke-profile run. :class:`WarmKernels` keeps one kernel per worker thread and clears it
between notebooks:

- ``%reset -f`` empties the user namespace (every variable of the previous notebook is gone,
  so a notebook that reads a name it did not define still fails, as it would alone), then a
  garbage collection frees its tensors;
- the execution counter is set back to 1, so the executed notebook reads as a fresh run.

What survives is what Python keeps per process: imported modules and their module-level
state. Every stage seeds all generators itself (:func:`covtl.train.seed_everything`), so a run
gives the same numbers in a warm kernel as in a fresh one; ``tests/test_study.py`` checks
this. A kernel that died (e.g. out of memory) is replaced by a new one at the next notebook.
``covtl study --fresh-kernels`` turns reuse off.

The papermill engine ``covtl-warm`` runs a notebook on a given kernel manager (``km=``)
without shutting the kernel down afterwards.

On a machine with several GPUs each worker gets its own: worker ``i`` (numbered in the order
the threads first ask for a kernel) sees only GPU ``i mod n_gpus`` through
``CUDA_VISIBLE_DEVICES`` in its kernel's environment (:func:`gpu_for_worker`,
:func:`worker_env`), so ``covtl study --jobs 4`` on 4 GPUs runs one notebook per GPU instead of
four on ``cuda:0``. ``WarmKernels(reuse=False)`` starts a new kernel (with that environment)
for every notebook, for ``--fresh-kernels``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

__all__ = ["ENGINE", "WarmKernels", "gpu_for_worker", "visible_gpus", "worker_env"]

ENGINE = "covtl-warm"
_RESET = ("get_ipython().run_line_magic('reset', '-f')\n"
          "import gc as _gc; _gc.collect(); del _gc\n"
          "get_ipython().execution_count = 1\n")


def visible_gpus(environ: Mapping[str, str] | None = None, device_count: int | None = None) -> list[str]:
    """The GPUs this process may hand to workers, as ``CUDA_VISIBLE_DEVICES`` entries.

    An existing ``CUDA_VISIBLE_DEVICES`` list is respected (its entries, indices or UUIDs, are
    what the workers get, cut to the ``device_count`` CUDA actually sees); without it the
    devices ``0 .. device_count - 1``. ``[]`` without CUDA. ``device_count`` defaults to
    ``torch.cuda.device_count()``.
    """
    environ = os.environ if environ is None else environ
    if device_count is None:
        import torch

        device_count = torch.cuda.device_count()
    if device_count <= 0:
        return []
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(device_count)]
    entries = [e.strip() for e in listed.split(",") if e.strip()]
    return entries[:device_count]


def gpu_for_worker(worker_index: int, visible: Sequence[str]) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` value of worker ``worker_index``: GPU ``i mod n``; ``None`` without GPUs."""
    if worker_index < 0:
        raise ValueError(f"worker_index must be >= 0, got {worker_index}")
    return str(visible[worker_index % len(visible)]) if visible else None


def worker_env(worker_index: int, visible: Sequence[str]) -> dict[str, str]:
    """The variables a worker's kernel gets on top of this process's environment."""
    gpu = gpu_for_worker(worker_index, visible)
    return {} if gpu is None else {"CUDA_VISIBLE_DEVICES": gpu}


class WarmKernels:
    """One started kernel per calling thread (``get``), cleared before each use.

    Args:
        env: ``env(worker_index) -> variables`` added to the environment of the kernels of
            that worker (e.g. :func:`worker_env`); workers are numbered 0, 1, ... in the order
            their threads first call :meth:`get`.
        reuse: ``False`` replaces the thread's kernel by a new one at every :meth:`get` (a
            fresh kernel per notebook, with the worker's environment).
    """

    def __init__(self, kernel_name: str = "python3", cwd: str | None = None,
                 env: Callable[[int], Mapping[str, str]] | None = None, reuse: bool = True) -> None:
        self.kernel_name, self.cwd, self.env, self.reuse = kernel_name, cwd, env, reuse
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Any] = []
        self._workers = 0

    def worker_index(self) -> int:
        """This thread's worker number (0, 1, ... in order of first call; stable per thread)."""
        index = getattr(self._local, "index", None)
        if index is None:
            with self._lock:
                index, self._workers = self._workers, self._workers + 1
            self._local.index = index
        return index

    def kernel_env(self) -> dict[str, str] | None:
        """The environment of this thread's kernels: ours plus ``env(worker)``; ``None`` = inherit."""
        if self.env is None:
            return None
        return {**os.environ, **self.env(self.worker_index())}

    def get(self):
        """This thread's kernel manager: alive, with an empty namespace and counter at 1."""
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        km = getattr(self._local, "km", None)
        if km is not None and self.reuse and run_sync(km.is_alive)():
            run_sync(_execute_silently)(km, _RESET)
            return km
        if km is not None and not self.reuse:
            with self._lock:
                self._all = [k for k in self._all if k is not km]
            _kill(km)
        km = AsyncKernelManager(kernel_name=self.kernel_name)
        env = self.kernel_env()
        run_sync(km.start_kernel)(cwd=self.cwd, **({"env": env} if env is not None else {}))
        self._local.km = km
        with self._lock:
            self._all.append(km)
        return km

    def close(self) -> None:
        """Shut down every kernel this object started (call once, from any thread)."""
        with self._lock:
            kms, self._all = self._all, []
        for km in kms:
            _kill(km)

    def __enter__(self) -> WarmKernels:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def _execute_silently(km, code: str, timeout: float = 120) -> None:
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=timeout)
        reply = await kc.execute_interactive(code, silent=True, store_history=False, timeout=timeout,
                                             output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"could not clear the warm kernel: {reply['content'].get('evalue')}")
    finally:
        kc.stop_channels()


def _kill(km) -> None:
    """Stop a kernel from any thread: its process is killed directly (no event loop needed)."""
    process = getattr(getattr(km, "provisioner", None), "process", None)
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(timeout=30)
    try:
        km.cleanup_connection_file()
        km.cleanup_ipc_files()
    except Exception:  # pragma: no cover - best effort: only temporary files are left
        pass


@cache
def register_engine() -> None:
    """Register the ``covtl-warm`` papermill engine (once per process)."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger

    class WarmKernelEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            km = kwargs.pop("km")
            client = PapermillNotebookClient(
                nb_man, km=km, timeout=execution_timeout, startup_timeout=start_timeout,
                kernel_name=kernel_name, log=logger, log_output=log_output, stdout_file=stdout_file,
                stderr_file=stderr_file,
            )
            try:
                return client.execute()
            finally:  # the kernel stays up for the next notebook; only this client's sockets close
                if client.kc is not None:
                    client.kc.stop_channels()

    papermill_engines.register(ENGINE, WarmKernelEngine)
