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
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

__all__ = ["ENGINE", "WarmKernels"]

ENGINE = "covtl-warm"
_RESET = ("get_ipython().run_line_magic('reset', '-f')\n"
          "import gc as _gc; _gc.collect(); del _gc\n"
          "get_ipython().execution_count = 1\n")


class WarmKernels:
    """One started kernel per calling thread (``get``), cleared before each use."""

    def __init__(self, kernel_name: str = "python3", cwd: str | None = None) -> None:
        self.kernel_name, self.cwd = kernel_name, cwd
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Any] = []

    def get(self):
        """This thread's kernel manager: alive, with an empty namespace and counter at 1."""
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        km = getattr(self._local, "km", None)
        if km is not None and run_sync(km.is_alive)():
            run_sync(_execute_silently)(km, _RESET)
            return km
        km = AsyncKernelManager(kernel_name=self.kernel_name)
        run_sync(km.start_kernel)(cwd=self.cwd)
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
