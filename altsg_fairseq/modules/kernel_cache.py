"""The compiled CPU kernels' on-disk cache (numba), made to fail soft.

``numba.njit(cache=True)`` picks its cache folder when the module is imported:
``NUMBA_CACHE_DIR`` when set, else the package's ``__pycache__``, else the
user's cache (``~/.cache/numba``); when none can be written (a read-only
install with no usable home, say) the import fails with ``RuntimeError:
cannot cache function``, and a cache file cut short (an interrupted write, a
full disk) fails every later process with ``EOFError`` or an unpickling
error. ``cached(dispatcher)`` gives a numba dispatcher the same cache with
three differences: a private folder in the temporary directory
(``<tmp>/altsg-numba-cache-<uid>``) follows numba's places, and without any
the kernels are compiled in every process; a cache file that cannot be read
is rewritten and the kernel compiled again; and one warning a process says
which of these happened (and when ``NUMBA_CACHE_DIR`` names a folder that
cannot be written). No environment variable is changed.
"""

import os
import tempfile
import warnings

from numba.core import caching, config


class KernelCacheWarning(UserWarning):
    """The kernels' disk cache is elsewhere than asked, off, or was unreadable."""


_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, KernelCacheWarning, stacklevel=3)


def _private_temp_root() -> str:
    owner = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return os.path.join(tempfile.gettempdir(), f"altsg-numba-cache-{owner}")


class _TemporaryCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """The last place: a folder of this user's own in the temporary directory (never one another user
    made: the cache files are pickles)."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._root = _private_temp_root()
        self._cache_path = os.path.join(self._root, self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self):
        return self._cache_path

    def ensure_cache_path(self):
        os.makedirs(self._root, mode=0o700, exist_ok=True)
        st = os.lstat(self._root)
        if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022 or os.path.islink(self._root)):
            raise PermissionError(f"{self._root} belongs to another user or others may write to it")
        super().ensure_cache_path()


class _CacheImpl(caching.FunctionCache._impl_class):
    _locator_classes = [*caching.FunctionCache._impl_class._locator_classes, _TemporaryCacheLocator]


class _KernelCache(caching.FunctionCache):
    """numba's function cache whose unreadable files are rewritten instead of failing the process."""

    _impl_class = _CacheImpl

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as e:  # a truncated index (EOFError) or data file (UnpicklingError), ...
            _warn_once(
                f"the compiled CPU kernels' cache in {self.cache_path} could not be read ({type(e).__name__}: {e}; "
                f"a write cut short?): compiling them again and rewriting it"
            )
            try:
                self.flush()  # an empty index: the next save writes the kernel afresh
            except OSError:
                self.disable()
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception as e:
            _warn_once(
                f"the compiled CPU kernels cannot be saved in {self.cache_path} ({type(e).__name__}: {e}): "
                f"they are compiled again in every process"
            )
            self.disable()


def _unwritable(folder: str) -> str:
    """Why ``folder`` cannot take cache files ('' when it can)."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return ""


def cached(dispatcher):
    """``dispatcher`` (a ``numba.njit`` function without ``cache=True``) with the disk cache this module
    describes; returns it."""
    try:
        cache = _KernelCache(dispatcher.py_func)
    except Exception as e:  # no folder can be written, or NUMBA_CACHE_LOCATOR_CLASSES names none
        _warn_once(
            f"no folder can hold the compiled CPU kernels' cache ({e}): they are compiled again in every process; "
            f"set NUMBA_CACHE_DIR to a folder you can write"
        )
        dispatcher._cache = caching.NullCache()
        return dispatcher
    where = cache.cache_path
    if config.CACHE_DIR and not os.path.abspath(where).startswith(os.path.abspath(config.CACHE_DIR) + os.sep):
        why = _unwritable(config.CACHE_DIR)
        _warn_once(
            f"NUMBA_CACHE_DIR={config.CACHE_DIR} cannot be written ({why or 'not usable'}): the compiled CPU "
            f"kernels are cached in {where} instead"
        )
    elif isinstance(cache._impl.locator, _TemporaryCacheLocator):
        _warn_once(
            f"neither the package's __pycache__ nor the user's cache folder can be written: the compiled CPU "
            f"kernels are cached in {where} (set NUMBA_CACHE_DIR to keep them elsewhere)"
        )
    dispatcher._cache = cache
    return dispatcher
