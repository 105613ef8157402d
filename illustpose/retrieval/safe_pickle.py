"""Reading the authors' retrieval pickles without running anything from them.

The reference's retrieval data (``neighbors.pkl``: a fitted scikit-learn ``NearestNeighbors``;
``full_body.pkl``: Danbooru post ids; ``raw_retrieval_support.zip``: pickled dicts of model
outputs) are pickles from the internet.  :func:`load_data_pickle` reads them with a
:class:`~illustpose.checkpoints.RestrictedUnpickler` whose allow-list holds only:

* numpy array and scalar reconstruction (``numpy.core.*`` of numpy 1.x and ``numpy._core.*``
  of numpy 2.x, protocol 5's ``_frombuffer``), ``numpy.ndarray`` (a marker ``_reconstruct``
  takes: empty arrays only, filled by their BUILD step), ``numpy.dtype``;
* plain containers (``set``, ``frozenset``, ``OrderedDict``; dicts, lists and tuples need no
  global) and ``_codecs.encode`` restricted to latin-1 (how protocol 2 spells bytes);
* scikit-learn's neighbours classes (``NearestNeighbors``, ``KDTree``, ``BallTree``, their
  ``newObj`` helpers and the distance-metric classes, in the module names of scikit-learn
  0.2x, 1.0 to 1.2 and 1.3 onwards) mapped to :class:`Recorded`, a stand-in that only keeps
  the state the pickle hands it.  No scikit-learn code runs and scikit-learn need not be
  installed.

Any other global raises :class:`~illustpose.errors.UnsafeCheckpointError` naming it
(``module.name``) before anything from the file runs.
"""

from __future__ import annotations

from typing import IO, Any

from ..checkpoints import _ZOO_ALLOWED, RestrictedUnpickler
from ..errors import CheckpointError, UnsafeCheckpointError

__all__ = ["Recorded", "load_data_pickle", "DATA_ALLOWED"]


class Recorded:
    """Stand-in for a scikit-learn object in a pickle: it keeps the pickled state, nothing else.

    A pickle gets a subclass of the named stand-in made for its unpickler
    (:class:`~illustpose.checkpoints.RestrictedUnpickler`), so ``isinstance`` and ``qualname``
    hold while nothing it does reaches the next load.

    Attributes:
        qualname: the class the pickle named, e.g. ``"sklearn.neighbors._unsupervised.NearestNeighbors"``.
        state: what the pickle's BUILD step passed (a dict of attributes for estimators, a
            tuple for trees and distance metrics); None until then.
    """

    qualname = ""

    def __init__(self):
        self.state = None

    def __setstate__(self, state) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<recorded {self.qualname}>"


_RECORDED: dict[str, type] = {}


def _recorded(qualname: str) -> type:
    """The :class:`Recorded` subclass standing for ``qualname`` (one per name)."""
    if qualname not in _RECORDED:
        _RECORDED[qualname] = type(qualname.rsplit(".", 1)[1], (Recorded,), {"qualname": qualname})
    return _RECORDED[qualname]


def _new_obj(cls):
    """scikit-learn's ``newObj(cls)`` (``cls.__new__(cls)``), for stand-in classes only."""
    if not (isinstance(cls, type) and issubclass(cls, Recorded)):
        raise UnsafeCheckpointError(f"refused: newObj asked to create {cls!r}, which is not a recorded stand-in")
    return cls.__new__(cls)


def _sklearn_names() -> dict[tuple[str, str], Any]:
    """The scikit-learn globals of a neighbours pickle, each mapped to its stand-in.

    ``NearestNeighbors``, ``KDTree``/``BallTree`` (and their ``64`` names), the trees' and the
    metrics' ``newObj`` (:func:`_new_obj`) and the distance metrics, in the module names of
    scikit-learn 0.2x (``sklearn.neighbors.unsupervised`` ...), 1.0 to 1.2
    (``sklearn.neighbors._kd_tree`` ...) and 1.3 onwards (``sklearn.metrics._dist_metrics``).

    Returns:
        ``{(module, name): Recorded subclass or _new_obj}``.
    """
    names: dict[tuple[str, str], Any] = {}
    estimators = ("sklearn.neighbors._unsupervised", "sklearn.neighbors.unsupervised")
    trees = {"KDTree": ("sklearn.neighbors._kd_tree", "sklearn.neighbors.kd_tree"),
             "BallTree": ("sklearn.neighbors._ball_tree", "sklearn.neighbors.ball_tree")}
    metrics = ("sklearn.metrics._dist_metrics", "sklearn.neighbors._dist_metrics", "sklearn.neighbors.dist_metrics")
    for module in estimators:
        names[(module, "NearestNeighbors")] = _recorded(f"{module}.NearestNeighbors")
    for tree, modules in trees.items():
        for module in modules:
            for name in (tree, f"{tree}64"):
                names[(module, name)] = _recorded(f"{module}.{name}")
            names[(module, "newObj")] = _new_obj
    names[("sklearn.neighbors._binary_tree", "newObj")] = _new_obj
    for module in metrics:
        names[(module, "newObj")] = _new_obj
        for metric in ("Euclidean", "Minkowski", "Manhattan", "Chebyshev", "SEuclidean", "WMinkowski"):
            for suffix in ("", "64", "32"):
                name = f"{metric}Distance{suffix}"
                names[(module, name)] = _recorded(f"{module}.{name}")
    return names


#: ``{(module, name): stand-in}``: every global a retrieval data pickle may name.
DATA_ALLOWED: dict[tuple[str, str], Any] = {
    **_ZOO_ALLOWED,  # numpy (empty-array _reconstruct only), latin-1 _codecs.encode, OrderedDict
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    **_sklearn_names(),
}


class _DataUnpickler(RestrictedUnpickler):
    allowed = DATA_ALLOWED
    refusal_hint = ("The authors' retrieval files (neighbors.pkl, full_body.pkl, raw_retrieval_support.zip) "
                    "never need it: use the files of the authors' release.")


def load_data_pickle(fp: IO[bytes], source: str) -> Any:
    """Unpickle one retrieval data pickle with :data:`DATA_ALLOWED`; nothing from it runs.

    Args:
        fp: the binary stream (a file, or a member opened from a zip).
        source: the file's name for messages (e.g. ``"support.zip:part0.pkl"``).

    Returns:
        plain containers, numpy arrays/scalars, and :class:`Recorded` stand-ins.

    Raises:
        UnsafeCheckpointError: the pickle names a global outside the allow-list (named in
            the message; nothing was executed).
        CheckpointError: a damaged or truncated pickle.
    """
    try:
        return _DataUnpickler(fp, source, encoding="latin1").load()  # names the file in a stand-in's refusal
    except CheckpointError:
        raise
    except Exception as e:  # EOFError, UnpicklingError, a stand-in given wrong arguments, ...
        raise CheckpointError(f"{source}: not a readable pickle ({type(e).__name__}: {e}); "
                              "download the file again") from None

