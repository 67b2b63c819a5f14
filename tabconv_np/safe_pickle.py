"""The one restricted unpickler behind every pickle the package reads.

Two readers use it, each with its own allow-list: :mod:`tabconv_np.data`
(CIFAR python batches: plain containers and numeric NumPy arrays) and
:mod:`tabconv_np.importers.torch_pickle` (``torch.save`` files: tensors and
plain containers).  Everything here is format-neutral:

* :class:`RestrictedUnpickler`: ``find_class`` answers only the
  ``(module, name)`` pairs of the caller's allow-list, every other global is
  refused with :class:`~tabconv_np.errors.UnsafePickleError` naming the file
  and ``module.name``; persistent ids are refused unless the caller handles
  them.  ``load()`` runs :func:`prescan` first, so nothing is built from a
  pickle that breaks a guard.
* :func:`prescan`: a walk over the opcodes (nothing is built, nothing is
  called) that models the unpickler's stack, its memo and the object graph,
  and refuses, *before* unpickling: globals and ``INST`` classes not on the
  allow-list, extension-registry codes, persistent ids where none are
  expected, ``BUILD`` on a global, memo indices never written or written out
  of order, more than ``MAX_MEMO`` memo entries, more than ``MAX_OBJECTS``
  containers / calls, containers or a stack of more than ``MAX_ITEMS`` items,
  and objects nested more than ``MAX_DEPTH`` deep (or in a cycle) -- deeply
  nested tuples used as dict keys would otherwise overflow the C stack when
  they are hashed and kill the process.  Truncated pickles and unknown
  opcodes are caught here too.
* :class:`StandIn` / :class:`Global`: what ``find_class`` hands out is never
  a shared mutable object.  Functions and classes on an allow-list are
  wrapped in read-only :class:`Global` objects, markers derive from
  :class:`StandIn`; both refuse ``BUILD`` (``__setstate__``) and attribute
  assignment, so a refused file cannot leave state behind for the next load.
  :class:`Sealed` gives the same ``BUILD`` refusal to per-load helper objects.
* :func:`codecs_encode`: the one stand-in for ``_codecs.encode`` (how
  protocol-2 pickles written by Python 3 spell ``bytes``), latin-1 only.
* :func:`safe_dtype` and :func:`check_shape`: numeric dtypes from
  :data:`SAFE_DTYPES` only, and array shapes bounded by ``MAX_NDIM`` and
  ``MAX_ARRAY_BYTES``.

This module is a leaf: it imports the standard library, NumPy and
:mod:`tabconv_np.errors` only.
"""
import io
import pickle
import pickletools

import numpy as np

from .errors import TabConvError, UnsafePickleError, WeightFileError

__all__ = [
    "RestrictedUnpickler", "load", "prescan", "default_refusal", "StandIn", "Sealed", "Global",
    "codecs_encode", "CODECS_ENCODE", "safe_dtype", "check_shape", "SAFE_DTYPES",
    "MAX_DEPTH", "MAX_MEMO", "MAX_OBJECTS", "MAX_ITEMS", "MAX_NDIM", "MAX_ARRAY_BYTES",
]

#: Nesting levels of the object graph a pickle may build (a tensor in a state dict in a
#: checkpoint dict is about 8 levels: containers, calls and their argument tuples).
MAX_DEPTH = 100
#: Memo entries (``PUT`` / ``MEMOIZE``) in one pickle.
MAX_MEMO = 1 << 20
#: Containers and call results (``EMPTY_LIST``, ``TUPLE``, ``REDUCE``, ...) in one pickle.
MAX_OBJECTS = 1 << 22
#: Items in one container, and objects waiting on the unpickler's stack.
MAX_ITEMS = 1 << 24
#: Dimensions of a reconstructed array.
MAX_NDIM = 16
#: Bytes of one reconstructed array.
MAX_ARRAY_BYTES = 1 << 31
#: NumPy dtype names a pickle may ask for: booleans, integers, floats (no objects, strings,
#: records, sub-arrays, datetimes).
SAFE_DTYPES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"})


# --- what find_class hands out ------------------------------------------------------------------
class Sealed:
    """Refuses ``BUILD``: a pickle cannot set the state of these objects."""

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafePickleError(f"the pickle tries to set the state of {self!r} (BUILD): refused")


class StandIn(Sealed):
    """A read-only object handed out by ``find_class`` (shared by every load, never mutable).

    Subclasses declare ``__slots__`` and set them in ``__init__`` with ``_init``.
    """

    __slots__ = ()

    def _init(self, **fields):
        for k, v in fields.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} objects are read-only")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} objects are read-only")


class Global(StandIn):
    """A function or class from an allow-list, callable but otherwise untouchable."""

    __slots__ = ("fn", "qualname")

    def __init__(self, fn, qualname):
        self._init(fn=fn, qualname=qualname)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self):
        return f"<stand-in for {self.qualname}>"


def codecs_encode(obj, encoding="utf-8", errors="strict"):
    """``_codecs.encode(str, "latin1")``: how protocol-2 pickles from Python 3 spell ``bytes``."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError(f"the pickle calls _codecs.encode({type(obj).__name__}, "
                                f"{encoding!r:.40}, {errors!r:.40}): refused (latin-1 text only)")
    return obj.encode("latin-1")


#: The allow-list entry every reader shares for ``_codecs.encode``.
CODECS_ENCODE = {("_codecs", "encode"): Global(codecs_encode, "_codecs.encode")}


def safe_dtype(name, byteorder="="):
    """The NumPy dtype ``name`` (one of :data:`SAFE_DTYPES`) in ``byteorder`` (``<``, ``>``,
    ``=`` or ``|``); anything else raises UnsafePickleError."""
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    if not isinstance(name, str) or name not in SAFE_DTYPES:
        raise UnsafePickleError(f"the pickle asks for the numpy dtype {name!r:.40}: only "
                                f"{sorted(SAFE_DTYPES)} are allowed")
    if byteorder not in ("<", ">", "=", "|"):
        raise UnsafePickleError(f"the pickle gives the dtype byte order {byteorder!r:.20}: refused")
    dt = np.dtype(name)
    return dt.newbyteorder(byteorder) if byteorder in ("<", ">") and dt.itemsize > 1 else dt


def check_shape(shape, itemsize, what="array"):
    """``shape`` as a tuple of ints when an array of it fits the limits, else UnsafePickleError."""
    if (not isinstance(shape, (tuple, list)) or len(shape) > MAX_NDIM
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40
                       for d in shape)):
        raise UnsafePickleError(f"the pickle gives a bad {what} shape {shape!r:.80}: refused")
    n = itemsize
    for d in shape:
        n *= d
    if n > MAX_ARRAY_BYTES:
        raise UnsafePickleError(f"the pickle asks for a {what} of shape {tuple(shape)} ({n} bytes, "
                                f"more than {MAX_ARRAY_BYTES}): refused")
    return tuple(shape)


# --- the opcode prescan -------------------------------------------------------------------------
_GLOBAL = object()          # a global on the modelled stack
_PUSH_LEAF = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
    "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "NEXT_BUFFER",
    "NONE", "NEWTRUE", "NEWFALSE", "FLOAT", "BINFLOAT", "EMPTY_TUPLE"})
_PUSH_STR = frozenset({"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"})
_BUILD_FROM_MARK = frozenset({"TUPLE", "LIST", "DICT", "FROZENSET", "INST", "OBJ"})
_ADD_FROM_MARK = frozenset({"APPENDS", "SETITEMS", "ADDITEMS"})
_CALLS = {"REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_NOTHING = frozenset({"PROTO", "FRAME"})


class _Malformed(Exception):
    """The prescan found a pickle the unpickler would reject (or mis-read): not a refusal."""


class _Model:
    """The unpickler's stack, marks and memo, and the graph of containers built so far.

    Stack entries: ``None`` (a leaf), a ``str`` (a short string: module and class names),
    ``_GLOBAL``, or an ``int``: a node -- a container or a call result that can hold others.
    """

    def __init__(self, where, limits):
        self.where = where
        self.max_depth, self.max_memo, self.max_objects, self.max_items = limits
        self.stack, self.marks, self.memo = [], [], {}
        self.kids, self.depth, self.size = [], [], []

    def refuse(self, what):
        raise UnsafePickleError(f"{self.where}: {what}: refused")

    # stack, mirroring the C unpickler's fence: nothing below the newest mark may be touched
    def fence(self):
        return self.marks[-1] if self.marks else 0

    def pop(self, n=1):
        s = self.stack
        if len(s) - n < self.fence():
            raise _Malformed("stack underflow")
        out = s[len(s) - n:]
        del s[len(s) - n:]
        return out

    def top(self):
        if len(self.stack) <= self.fence():
            raise _Malformed("stack underflow")
        return self.stack[-1]

    def pop_mark(self):
        if not self.marks:
            raise _Malformed("no MARK before an opcode that needs one")
        m = self.marks.pop()
        out = self.stack[m:]
        del self.stack[m:]
        return out

    def push(self, v):
        self.stack.append(v)
        if len(self.stack) > self.max_items:
            self.refuse(f"more than {self.max_items} objects wait on the unpickler's stack")

    # the object graph
    def node(self, items):
        n = len(self.kids)
        if n >= self.max_objects:
            self.refuse(f"the pickle builds more than {self.max_objects} containers or objects")
        self.kids.append([])
        self.depth.append(1)
        self.size.append(0)
        self.add(n, items)
        return n

    def add(self, n, items):
        if type(n) is not int:      # adding to a leaf or a global: the unpickler fails
            raise _Malformed("items added to something that is not a container")
        self.size[n] += len(items)
        if self.size[n] > self.max_items:
            self.refuse(f"a container holds more than {self.max_items} items")
        kids, depth = self.kids[n], self.depth
        for k in items:
            if type(k) is int:
                kids.append(k)
                if depth[k] + 1 > depth[n]:
                    depth[n] = depth[k] + 1
        if depth[n] > self.max_depth:
            self.refuse(f"the pickle nests objects more than {self.max_depth} deep")

    def deepest(self):
        """The longest chain of the final graph (mutations can lengthen old chains); a cycle
        counts as unbounded."""
        kids, n = self.kids, len(self.kids)
        depth = [0] * n
        state = bytearray(n)               # 0 unseen, 1 on the path, 2 done
        for root in range(n):
            if state[root]:
                continue
            path = [(root, 0)]
            state[root] = 1
            while path:
                v, i = path[-1]
                if i < len(kids[v]):
                    path[-1] = (v, i + 1)
                    k = kids[v][i]
                    if state[k] == 1:
                        return self.max_depth + 1
                    if state[k] == 0:
                        state[k] = 1
                        path.append((k, 0))
                    continue
                d = 1 + max((depth[k] for k in kids[v]), default=0)
                if d > self.max_depth:
                    return d
                depth[v] = d
                state[v] = 2
                path.pop()
        return max(depth, default=0)


def prescan(f, where, allowed, *, persistent=False, refusal=None, max_depth=MAX_DEPTH,
            max_memo=MAX_MEMO, max_objects=MAX_OBJECTS, max_items=MAX_ITEMS):
    """Walk the opcodes of the pickle at ``f``'s position; build and call nothing.

    ``allowed`` holds the ``(module, name)`` pairs the pickle may name; ``persistent``
    whether persistent ids are expected; ``refusal(module, name, where)`` the message of
    a refused global.  Raises :class:`UnsafePickleError` when a guard is broken (see the
    module docstring), and ``ValueError`` for a truncated or corrupt pickle.  ``f`` is
    left where it was.
    """
    refusal = refusal or default_refusal
    m = _Model(where, (max_depth, max_memo, max_objects, max_items))

    def check_global(module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise _Malformed("a global named by something other than a short string")
        if (module, name) not in allowed:
            raise UnsafePickleError(refusal(module, name, where))
        return _GLOBAL

    start = f.tell()
    try:
        for op, arg, _ in pickletools.genops(f):
            name = op.name
            if name in _PUSH_LEAF:
                m.push(None)
            elif name in _PUSH_STR:
                m.push(arg if len(arg) <= 256 else None)
            elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
                m.push(m.node(()))
            elif name in _CALLS:
                m.push(m.node(m.pop(_CALLS[name])))
            elif name in _BUILD_FROM_MARK:
                items = m.pop_mark()
                if name == "INST":
                    module, _, gname = arg.partition(" ")
                    check_global(module, gname)
                m.push(m.node(items))
            elif name in _ADD_FROM_MARK:
                items = m.pop_mark()
                m.add(m.top(), items)
            elif name in ("APPEND", "SETITEM"):
                items = m.pop(1 if name == "APPEND" else 2)
                m.add(m.top(), items)
            elif name == "BUILD":
                (state,) = m.pop(1)
                inst = m.top()
                if inst is _GLOBAL:
                    m.refuse("the pickle tries to set the state of a global (BUILD)")
                m.add(inst, [state])
            elif name == "MARK":
                m.marks.append(len(m.stack))
            elif name == "POP":
                if m.marks and m.marks[-1] == len(m.stack):
                    m.marks.pop()
                else:
                    m.pop(1)
            elif name == "POP_MARK":
                m.pop_mark()
            elif name == "DUP":
                m.push(m.top())
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                idx = len(m.memo) if name == "MEMOIZE" else arg
                if not isinstance(idx, int) or idx < 0 or idx > len(m.memo):
                    raise _Malformed(f"memo index {idx!r:.20} out of order")
                m.memo[idx] = m.top()
                if len(m.memo) > max_memo:
                    m.refuse(f"the pickle stores more than {max_memo} memo entries")
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in m.memo:
                    raise _Malformed(f"memo index {arg!r:.20} never stored")
                m.push(m.memo[arg])
            elif name == "GLOBAL":
                module, _, gname = arg.partition(" ")
                m.push(check_global(module, gname))
            elif name == "STACK_GLOBAL":
                module, gname = m.pop(2)
                m.push(check_global(module, gname))
            elif name in ("PERSID", "BINPERSID"):
                if not persistent:
                    m.refuse("the pickle uses persistent ids where none are expected")
                if name == "BINPERSID":
                    m.pop(1)
                m.push(None)
            elif name == "READONLY_BUFFER":
                m.top()
            elif name in ("EXT1", "EXT2", "EXT4"):
                m.refuse(f"the pickle names a global by extension code {arg!r:.20}")
            elif name == "STOP":
                m.pop(1)
            elif name not in _NOTHING:
                raise _Malformed(f"opcode {name} is not modelled")
        if m.deepest() > max_depth:
            m.refuse(f"the pickle nests objects more than {max_depth} deep (or in a cycle)")
    except _Malformed as e:
        raise ValueError(str(e)) from None
    finally:
        f.seek(start)


# --- the unpickler ------------------------------------------------------------------------------
def default_refusal(module, name, where):
    """The message of a refused global, for readers without a more helpful one."""
    return (f"{where}: the pickle asks for the global {module}.{name}: refused (not on this "
            f"reader's allow-list; loading it could run code)")


def _named(e, where):
    """``e`` with ``where`` in front of its message (same type)."""
    msg = str(e)
    return e if msg.startswith(where) else type(e)(f"{where}: {msg}")


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that builds only what the caller's allow-list names.

    Parameters
    ----------
    file
        A seekable binary file positioned at the pickle.
    allowed
        Mapping ``(module, name) -> object``: what ``find_class`` answers.  Functions
        and classes are handed out wrapped in a :class:`Global`; :class:`StandIn` objects
        as they are.  Nothing else is ever imported.
    where
        The file's name, for messages.
    encoding
        Passed to ``pickle.Unpickler`` (``"bytes"`` keeps Python-2 ``str`` as bytes).
    refusal
        ``refusal(module, name, where) -> str``: the message of a refused global.
    persistent_load
        ``persistent_load(pid)`` for readers that expect persistent ids; without it, a
        persistent id is refused.
    malformed
        The error class for truncated or corrupt pickles (:class:`WeightFileError`).
    limits
        ``max_depth``, ``max_memo``, ``max_objects``, ``max_items`` for :func:`prescan`.

    ``load()`` runs :func:`prescan` first; every error it raises is a
    :class:`~tabconv_np.errors.TabConvError` naming ``where``: UnsafePickleError for a
    refusal, ``malformed`` for damage.
    """

    def __init__(self, file, allowed, where="<pickle>", *, encoding="ASCII", refusal=None,
                 persistent_load=None, malformed=WeightFileError, **limits):
        super().__init__(file, encoding=encoding)
        self._file = file
        self._allowed = allowed
        self.where = where
        self._refusal = refusal or default_refusal
        self._persistent = persistent_load
        self._malformed = malformed
        self._limits = limits

    def find_class(self, module, name):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise UnsafePickleError(self._refusal(module, name, self.where))
        if not isinstance(obj, StandIn):
            obj = Global(obj, f"{module}.{name}")       # fresh, read-only, for this load only
        return obj

    def persistent_load(self, pid):
        if self._persistent is None:
            raise UnsafePickleError(f"{self.where}: the pickle uses persistent ids where none "
                                    f"are expected: refused")
        return self._persistent(pid)

    def load(self):
        where = self.where
        try:
            prescan(self._file, where, self._allowed, persistent=self._persistent is not None,
                    refusal=self._refusal, **self._limits)
            return super().load()
        except TabConvError as e:
            raise _named(e, where) from None
        except Exception as e:   # truncation, unpickling errors, bad arguments, memory
            raise self._malformed(f"{where}: corrupt or truncated pickle: {type(e).__name__}: "
                                  f"{e}") from None


def load(source, allowed, where="<pickle>", **kwargs):
    """Unpickle ``source`` (bytes, or a seekable binary file at the pickle) with a
    :class:`RestrictedUnpickler` (``kwargs`` as there)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    return RestrictedUnpickler(source, allowed, where, **kwargs).load()
