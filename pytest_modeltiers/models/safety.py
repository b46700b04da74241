"""Static safety scan of a model file and its local imports, run before any of it executes.

PYTEST_DONT_REWRITE

Importing a file runs it, and a ``--model`` file may come from a gist or a colleague, so the
file is parsed (never run) and refused, naming the line and why, when it can start processes,
reach the network, run dynamic code or write files; ``--trust-model`` overrides.
"""

from __future__ import annotations

import ast
import builtins
import importlib.machinery
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.machinery import BYTECODE_SUFFIXES, EXTENSION_SUFFIXES
from pathlib import Path

__all__ = ["RULES", "SafetyFinding", "scan_model_file"]

PROCESS = "process-execution"
NETWORK = "network"
NATIVE = "native-code"
DYNAMIC = "dynamic-code"
UNPICKLING = "unpickling"
RECURSIVE_DELETE = "recursive-delete"
FILE_WRITE = "file-write"

RULES: dict[str, str] = {
    PROCESS: "starts another program or a shell",
    NETWORK: "opens network connections",
    NATIVE: "loads native code that Python cannot inspect",
    DYNAMIC: "runs code, or reaches names, that the scan cannot read in the source",
    UNPICKLING: "unpickles data, which can run arbitrary code",
    RECURSIVE_DELETE: "deletes directory trees",
    FILE_WRITE: "writes, moves or deletes files",
}


@dataclass(frozen=True)
class SafetyFinding:
    """One capability found in a model file or one of its local imports.

    ``path`` is the file as given to :func:`scan_model_file` (or a local module beside it),
    ``line`` the 1-based line, ``rule`` one of :data:`RULES`, ``detail`` what was found and why
    it matters, written for the user who has to decide whether to trust the file.
    """

    path: Path
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.detail}"


# ---------------------------------------------------------------------------------------------
# Rule tables. Keys are qualified names as the scan resolves them ("os.system"); a module key
# covers everything under it. Re-exports match by suffix, so keys need only the canonical name.


@dataclass(frozen=True)
class _Rule:
    rule: str
    why: str


_OS_MODULES = ("os", "posix", "nt")  # os re-exports posix (POSIX) or nt (Windows)


def _table(*rows: tuple[str, str, str]) -> dict[str, _Rule]:
    """``(rule, why, "name name ...")`` rows as one mapping; ``os.x`` also covers posix/nt."""
    table: dict[str, _Rule] = {}
    for rule, why, names in rows:
        for name in names.split():
            head, _, rest = name.partition(".")
            for module in _OS_MODULES if head == "os" else (head,):
                table[f"{module}.{rest}" if rest else module] = _Rule(rule, why)
    return table


#: Modules where every attribute is a finding: importing one is already reported.
_MODULES: dict[str, _Rule] = _table(
    (
        PROCESS,
        "starts other programs",
        """subprocess _posixsubprocess _winapi pty pipes asyncio.subprocess pexpect plumbum
        webbrowser antigravity distutils setuptools ensurepip venv
        multiprocessing.popen_fork multiprocessing.popen_forkserver
        multiprocessing.popen_spawn_posix _tkinter""",
    ),
    (FILE_WRITE, "writes database files", "dbm.dumb dbm.gnu dbm.ndbm _dbm _gdbm"),
    (
        NETWORK,
        "opens network connections",
        """socket _socket socketserver urllib.request urllib2 http.client http.server ftplib
        smtplib poplib imaplib nntplib telnetlib xmlrpc.client xmlrpc.server requests httpx
        aiohttp urllib3 pycurl paramiko websocket websockets zmq multiprocessing.connection
        multiprocessing.managers torch.hub torch.distributed.rpc""",
    ),
    (
        NATIVE,
        "loads or compiles native code that Python cannot inspect",
        "ctypes _ctypes cffi cppyy _imp numpy.ctypeslib torch.utils.cpp_extension",
    ),
    (DYNAMIC, "runs code from a path the scan cannot follow", "runpy zipimport"),
    (DYNAMIC, "runs strings or docstrings as Python code", "doctest pdb bdb trace"),
    (
        DYNAMIC,
        "resolves dotted names from strings and calls them (configuration is code here)",
        "logging.config pydoc",
    ),
)

#: Single attributes of otherwise ordinary modules.
_ATTRIBUTES: dict[str, _Rule] = _table(
    (PROCESS, "runs a shell command", "os.system os.popen asyncio.create_subprocess_shell"),
    (
        PROCESS,
        "starts another program",
        """os.execl os.execle os.execlp os.execlpe os.execv os.execve os.execvp os.execvpe
        os.spawnl os.spawnle os.spawnlp os.spawnlpe os.spawnv os.spawnve os.spawnvp os.spawnvpe
        os.posix_spawn os.posix_spawnp os.fork os.forkpty os.startfile
        asyncio.create_subprocess_exec multiprocessing.util.spawnv_passfds""",
    ),
    (
        PROCESS,
        "runs Tcl code, whose exec command starts programs",
        "tkinter.Tcl tkinter.Tk tkinter.Tcl.eval",
    ),
    (
        PROCESS,
        "sets the program multiprocessing starts for its workers",
        "multiprocessing.set_executable multiprocessing.spawn.set_executable",
    ),
    (
        NETWORK,
        "opens network connections",
        """ssl.get_server_certificate logging.handlers.SocketHandler
        logging.handlers.DatagramHandler logging.handlers.SysLogHandler
        logging.handlers.HTTPHandler logging.handlers.SMTPHandler""",
    ),
    (
        NETWORK,
        "opens network connections",
        """asyncio.open_connection asyncio.start_server asyncio.open_unix_connection
        asyncio.start_unix_server torch.distributed.TCPStore torch.distributed.init_process_group
        torch.hub.download_url_to_file""",
    ),
    (
        NATIVE,
        "loads a shared library or compiled extension into the process",
        """torch.ops.load_library torch.classes.load_library
        torch.cuda.memory.CUDAPluggableAllocator importlib.machinery.ExtensionFileLoader
        imp.load_dynamic torch._ops.ops.load_library torch._ops.load_library
        torch._ops._OpNamespace.load_library""",
    ),
    (DYNAMIC, "evaluates a string as Python code", "builtins.eval"),
    (DYNAMIC, "runs a string or code object as Python code", "builtins.exec builtins.execfile"),
    (DYNAMIC, "turns a string into a code object", "builtins.compile"),
    (
        DYNAMIC,
        "runs a string as Python code",
        """timeit.timeit timeit.repeat timeit.Timer cProfile.run cProfile.runctx profile.run
        profile.runctx""",
    ),
    (DYNAMIC, "can import every module it finds", "builtins.help"),
    (
        DYNAMIC,
        "processes .pth files, which can run code",
        "site.addsitedir site.addpackage site.main",
    ),
    (
        DYNAMIC,
        "resolves dotted names from configuration and calls them",
        """hydra.utils.instantiate hydra.utils.call hydra.utils.get_method hydra.utils.get_class
        lightning.pytorch.cli.instantiate_class pytorch_lightning.cli.instantiate_class""",
    ),
    (
        DYNAMIC,
        "calls the function named by $PYTHONBREAKPOINT, which can be any function",
        "builtins.breakpoint sys.breakpointhook",
    ),
    (
        DYNAMIC,
        "loads a module from a path the scan cannot follow",
        """importlib.util.spec_from_file_location importlib.util.spec_from_loader
        importlib.util.module_from_spec importlib.machinery.SourceFileLoader
        importlib.machinery.SourcelessFileLoader imp.load_source imp.load_compiled
        imp.load_module imp.load_package""",
    ),
    (
        DYNAMIC,
        "builds code objects at run time",
        "types.FunctionType types.LambdaType types.CodeType marshal.loads marshal.load",
    ),
    (
        DYNAMIC,
        "compiles and runs strings as Python code",
        """code.interact code.InteractiveInterpreter code.InteractiveConsole code.compile_command
        codeop.compile_command codeop.Compile codeop.CommandCompiler""",
    ),
    (
        DYNAMIC,
        "reaches live objects (frames, modules) the source does not name",
        """sys._getframe sys._current_frames inspect.currentframe gc.get_objects
        gc.get_referrers gc.get_referents""",
    ),
    (DYNAMIC, "downloads and runs a repository's hubconf.py", "torch.hub.load"),
    (
        UNPICKLING,
        "unpickles data, which can run arbitrary code",
        """pickle.load pickle.loads pickle.Unpickler _pickle.load _pickle.loads _pickle.Unpickler
        cPickle.load cPickle.loads dill.load dill.loads dill.Unpickler cloudpickle.load
        cloudpickle.loads joblib.load shelve.open shelve.Shelf shelve.DbfilenameShelf
        shelve.BsdDbShelf pandas.read_pickle jsonpickle.decode torch.package.PackageImporter
        yaml.unsafe_load yaml.unsafe_load_all multiprocessing.reduction.ForkingPickler
        multiprocessing.reduction.ForkingPickler.loads""",
    ),
    (
        UNPICKLING,
        "downloads a file and loads it with torch.load, which unpickles by default",
        "torch.utils.model_zoo.load_url torch.hub.load_state_dict_from_url",
    ),
    (
        RECURSIVE_DELETE,
        "deletes a directory tree",
        "shutil.rmtree os.removedirs tempfile.TemporaryDirectory._rmtree",
    ),
    (
        FILE_WRITE,
        "changes the filesystem",
        """os.remove os.unlink os.rmdir os.rename os.renames os.replace os.mkdir os.makedirs
        os.symlink os.link os.mknod os.mkfifo os.truncate os.chmod os.chown os.lchown""",
    ),
    (
        FILE_WRITE,
        "writes files",
        """shutil.copy shutil.copy2 shutil.copyfile shutil.copytree shutil.copymode
        shutil.copystat shutil.move shutil.make_archive shutil.unpack_archive shutil.chown
        torch.save torch.jit.save torch.onnx.export numpy.save numpy.savez
        numpy.savez_compressed numpy.savetxt safetensors.torch.save_file
        safetensors.numpy.save_file logging.FileHandler logging.handlers.RotatingFileHandler
        logging.handlers.TimedRotatingFileHandler logging.handlers.WatchedFileHandler
        sqlite3.connect dbm.open py_compile.compile compileall.compile_dir compileall.compile_file
        zipapp.create_archive http.cookiejar.FileCookieJar http.cookiejar.MozillaCookieJar
        http.cookiejar.LWPCookieJar pathlib.Path.rename pathlib.Path.replace pathlib.Path.unlink
        pathlib.Path.rmdir pathlib.Path.write_text pathlib.Path.write_bytes pathlib.Path.touch
        pathlib.Path.mkdir""",
    ),
)


# Calls that are dangerous only with some arguments. A check returns why, or None when the call
# is fine; a reference without a call (``load = torch.load``) cannot be checked and is reported.
_CallCheck = Callable[[ast.Call], "str | None"]

_NOT_LITERAL = object()
_WRITE_MODE = re.compile(r"[wax+]")


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _argument(call: ast.Call, index: int | None, keyword: str) -> ast.expr | None:
    """The argument passed at ``index`` (None: keyword-only) or as ``keyword``."""
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    if index is None or index >= len(call.args):
        return None
    if any(isinstance(a, ast.Starred) for a in call.args[: index + 1]):
        return None  # ``f(*args, mode)``: the position is unknown
    return call.args[index]


def _unpacks(call: ast.Call) -> bool:
    """``f(*args)`` or ``f(**kwargs)``: the arguments cannot be read from the source."""
    return any(isinstance(a, ast.Starred) for a in call.args) or any(
        kw.arg is None for kw in call.keywords
    )


def _literal(node: ast.expr | None) -> object:
    """The constant's value, or ``_NOT_LITERAL`` for anything computed (or absent)."""
    return node.value if isinstance(node, ast.Constant) else _NOT_LITERAL


def _open_mode_check(call: ast.Call) -> str | None:
    """``open(file, mode)`` and friends: writing iff the mode contains w, a, x or +."""
    mode = _argument(call, 1, "mode")
    if mode is None:
        return "opens a file with arguments the scan cannot read" if _unpacks(call) else None
    value = _literal(mode)
    if not isinstance(value, str):
        return "opens a file with a mode computed at run time"
    return f"opens a file for writing (mode {value!r})" if _WRITE_MODE.search(value) else None


_READ_ONLY_FLAGS = _names(
    "os posix nt O_RDONLY O_CLOEXEC O_BINARY O_NOFOLLOW O_DIRECTORY O_NONBLOCK O_NOINHERIT "
    "O_NOATIME O_NOCTTY"
)


def _os_open_check(call: ast.Call) -> str | None:
    """``os.open(path, flags)``: fine only when every flag is a read-only one."""
    flags = _argument(call, 1, "flags")
    seen: set[str] = set()
    for node in ast.walk(flags) if flags is not None else ():
        if isinstance(node, ast.Attribute):
            seen.add(node.attr)
        elif isinstance(node, ast.Name):
            seen.add(node.id)
        elif not isinstance(node, ast.BinOp | ast.BitOr | ast.Load):
            seen.add("?")  # a number or a call: cannot tell
    if seen and seen <= _READ_ONLY_FLAGS:
        return None
    return "opens a file descriptor that can write"


def _torch_load_check(call: ast.Call) -> str | None:
    if _literal(_argument(call, None, "weights_only")) is True:
        return None
    return "unpickles the file without weights_only=True, which can run arbitrary code"


def _allow_pickle_at(index: int, what: str) -> _CallCheck:
    """NumPy readers whose ``allow_pickle`` sits at ``index``: refused unless it is False."""

    def check(call: ast.Call) -> str | None:
        allow = _argument(call, index, "allow_pickle")
        if (allow is None and not _unpacks(call)) or _literal(allow) is False:
            return None
        return f"{what} with allow_pickle, which unpickles and can run arbitrary code"

    return check


_numpy_load_check = _allow_pickle_at(2, "loads")


def _mode_at(index: int) -> _CallCheck:
    """``Class(file, mode)``-style writers whose mode sits at ``index``."""

    def check(call: ast.Call) -> str | None:
        mode = _argument(call, index, "mode")
        if mode is None:
            return "opens a file with arguments the scan cannot read" if _unpacks(call) else None
        value = _literal(mode)
        if not isinstance(value, str):
            return "opens a file with a mode computed at run time"
        return f"opens a file for writing (mode {value!r})" if _WRITE_MODE.search(value) else None

    return check


def _memmap_check(call: ast.Call) -> str | None:
    """``np.memmap`` defaults to mode ``r+``, which writes through to the file."""
    mode = _literal(_argument(call, 2, "mode"))
    if mode in ("r", "c", "readonly", "copyonwrite"):
        return None
    return "maps a file for writing (numpy.memmap's default mode is 'r+')"


def _from_file_check(call: ast.Call) -> str | None:
    """``torch.from_file(name, shared=True)`` writes the tensor back to the file."""
    shared = _argument(call, 1, "shared")
    if (shared is None and not _unpacks(call)) or _literal(shared) is False:
        return None
    return "maps a file shared, so writes to the tensor write the file"


def _tempfile_check(index: int) -> _CallCheck:
    """``tempfile`` is fine in the temp directory; ``dir=`` puts the file anywhere."""

    def check(call: ast.Call) -> str | None:
        if _argument(call, index, "dir") is not None or _unpacks(call):
            return "creates a file in a directory the code chooses"
        return None

    return check


_SAFE_YAML_LOADERS = _names("SafeLoader CSafeLoader BaseLoader CBaseLoader")


def _yaml_load_check(call: ast.Call) -> str | None:
    loader = _argument(call, 1, "Loader")
    name = loader.attr if isinstance(loader, ast.Attribute) else getattr(loader, "id", None)
    if name in _SAFE_YAML_LOADERS:
        return None
    return "loads YAML with a loader that can build arbitrary Python objects"


def _basic_config_check(call: ast.Call) -> str | None:
    if _argument(call, None, "filename") is not None or _unpacks(call):
        return "logs to a file"
    return None


def _codecs_check(call: ast.Call) -> str | None:
    encoding = _literal(_argument(call, 1, "encoding"))
    if isinstance(encoding, str) and encoding.lower().replace("-", "_") in ("rot13", "rot_13"):
        return "decodes a rot13-obfuscated string"
    return None


_CALL_CHECKS: dict[str, tuple[str, _CallCheck]] = {
    **{
        name: (FILE_WRITE, _open_mode_check)
        for name in _names(
            "builtins.open io.open io.FileIO codecs.open gzip.open gzip.GzipFile bz2.open "
            "lzma.open tarfile.open zipfile.ZipFile os.fdopen posix.fdopen nt.fdopen"
        )
    },
    **{f"{module}.open": (FILE_WRITE, _os_open_check) for module in _OS_MODULES},
    "logging.basicConfig": (FILE_WRITE, _basic_config_check),
    "tarfile.TarFile": (FILE_WRITE, _mode_at(1)),
    "tarfile.TarFile.open": (FILE_WRITE, _mode_at(1)),
    "bz2.BZ2File": (FILE_WRITE, _mode_at(1)),
    "lzma.LZMAFile": (FILE_WRITE, _mode_at(1)),
    "pathlib.Path.open": (FILE_WRITE, _mode_at(1)),
    "numpy.memmap": (FILE_WRITE, _memmap_check),
    "torch.from_file": (FILE_WRITE, _from_file_check),
    "numpy.lib.npyio.NpzFile": (UNPICKLING, _numpy_load_check),
    "torch.load": (UNPICKLING, _torch_load_check),
    "torch.serialization.load": (UNPICKLING, _torch_load_check),
    "numpy.load": (UNPICKLING, _numpy_load_check),
    "numpy.lib.npyio.load": (UNPICKLING, _numpy_load_check),
    "numpy.lib.format.read_array": (UNPICKLING, _allow_pickle_at(1, "reads an array")),
    "yaml.load": (UNPICKLING, _yaml_load_check),
    "yaml.load_all": (UNPICKLING, _yaml_load_check),
    **{
        f"tempfile.{name}": (FILE_WRITE, _tempfile_check(index))
        for name, index in [
            ("mkstemp", 2),
            ("mkdtemp", 2),
            ("TemporaryDirectory", 2),
            ("NamedTemporaryFile", 6),
            ("TemporaryFile", 6),
        ]
    },
    "codecs.decode": (DYNAMIC, _codecs_check),
    "codecs.encode": (DYNAMIC, _codecs_check),
}

#: Methods reported on any object: their names are distinctive enough (Path-like writers).
_METHODS: dict[str, _Rule] = _table(
    (
        FILE_WRITE,
        "writes to the filesystem (a pathlib.Path method)",
        "write_text write_bytes touch unlink mkdir chmod symlink_to hardlink_to link_to",
    ),
    (FILE_WRITE, "writes an array to a file", "tofile"),
    (FILE_WRITE, "saves files to a directory", "save_pretrained"),
    (FILE_WRITE, "extracts an archive onto disk", "extractall"),
    (PROCESS, "starts another program (an asyncio event loop method)", "subprocess_exec"),
    (
        NETWORK,
        "opens network connections (an asyncio event loop method)",
        "create_connection create_server create_datagram_endpoint sock_connect",
    ),
    (PROCESS, "runs a shell command (an asyncio event loop method)", "subprocess_shell"),
)

#: Attribute names that are dangerous only as callables, and that no model needs as one: any
#: ``x.name`` whose base the scan cannot resolve to a harmless object is reported, because the
#: base may be a module reached some way the resolver cannot follow
#: (``(F if c else nn).torch.os.system``). Common method names (``eval``, ``compile``, ``run``,
#: ``load``, ``remove``) are left out: ``model.eval()`` must stay clean.
_DANGEROUS_NAMES: dict[str, _Rule] = _table(
    (
        PROCESS,
        "may start another program or a shell (the object it is taken from is not known)",
        """system popen popen2 popen3 popen4 spawnl spawnle spawnlp spawnlpe spawnv spawnve
        spawnvp spawnvpe execl execle execlp execlpe execv execve execvp execvpe _execvpe
        posix_spawn posix_spawnp startfile fork forkpty check_output check_call getoutput
        getstatusoutput Popen create_subprocess_shell create_subprocess_exec spawnv_passfds
        set_executable _fork_exec fork_exec""",
    ),
    (
        NATIVE,
        "may load native code (the object it is taken from is not known)",
        "load_library dlopen LoadLibrary CDLL PyDLL WinDLL OleDLL cdll pydll load_dynamic",
    ),
    (
        RECURSIVE_DELETE,
        "may delete a directory tree (the object it is taken from is not known)",
        "rmtree _rmtree _rmtree_safe_fd _rmtree_unsafe removedirs",
    ),
    (
        NETWORK,
        "may open network connections (the object it is taken from is not known)",
        "urlopen urlretrieve get_server_certificate create_connection",
    ),
    (
        UNPICKLING,
        "may unpickle data, which can run arbitrary code (the object it is taken from is not "
        "known)",
        "Unpickler ForkingPickler load_url",
    ),
    (
        DYNAMIC,
        "may import or run code by name (the object it is taken from is not known)",
        "__import__ import_module exec_module run_module run_path",
    ),
)

#: Calls that import the module named by a dotted string and hand out the object it names
#: (``patch("os.system").get_original()``, ``patch.multiple``).
_PATCHERS = _names(
    "unittest.mock.patch mock.patch unittest.mock.patch.multiple mock.patch.multiple"
)

#: Calls returning the module that defines their argument.
_MODULE_OF = _names("inspect.getmodule")

#: Calls that look attributes up by a dotted string: ``attrgetter("os.system")(glob)``.
_NAME_GETTERS = _names("operator.attrgetter operator.methodcaller")

#: Names that import a module: a literal argument is checked as an import, a computed one is
#: reported because the scan cannot tell which module it is.
_IMPORTERS = _names(
    "builtins.__import__ importlib.__import__ importlib.import_module pkgutil.resolve_name"
)

#: Calls that import the parent package of the dotted name they are given (to find the
#: child in the parent's ``__path__``): ``find_spec("pkg.mod")`` runs ``pkg/__init__.py``.
_PARENT_IMPORTERS = _names(
    "importlib.util.find_spec pkgutil.find_loader pkgutil.get_loader importlib.find_loader"
)

#: Calls that import every package they find under the folders they walk.
_PACKAGE_WALKERS = _names("pkgutil.walk_packages")

#: Modules the interpreter imports by name on its own at start-up (``site`` runs them from any
#: folder on the import path, in this process and every Python process it starts).
_STARTUP_MODULES = frozenset({"sitecustomize", "usercustomize"})

#: Attributes that reach interpreter internals (function globals, every class, frames).
_INTROSPECTION = _names(
    "__globals__ __builtins__ __subclasses__ f_globals f_builtins f_locals gi_frame cr_frame "
    "ag_frame tb_frame"
)
_HIDDEN_NAMES = _names("__builtins__ __loader__ __spec__")

#: Modules whose private helpers duplicate table entries (``pickle._loads``, ``shutil._rmtree_*``,
#: ``os._execvpe``): any ``module._name`` on them is reported.
_PRIVATE_GUARDED = _names(
    """os posix nt shutil subprocess pickle _pickle importlib builtins io marshal socket ctypes
    pty runpy uuid platform multiprocessing asyncio tempfile codecs pdb site pkgutil zipimport
    logging pathlib urllib http ssl gc torch.serialization torch.hub warnings"""
)

#: Decoders whose output fed to a dynamic sink marks an obfuscated payload.
_DECODERS = _names(
    """base64.b64decode base64.b32decode base64.b16decode base64.a85decode base64.b85decode
    base64.decodebytes base64.standard_b64decode base64.urlsafe_b64decode binascii.a2b_base64
    binascii.unhexlify binascii.a2b_hex codecs.decode zlib.decompress gzip.decompress
    bz2.decompress lzma.decompress marshal.loads builtins.bytes.fromhex
    builtins.bytearray.fromhex"""
)

#: Suffix matching (``x.os.system`` is ``os.system``) is skipped under these namespaces, whose
#: own names collide with the tables (``safetensors.torch.load`` takes bytes, not a pickle).
_NO_SUFFIX_MATCH = ("safetensors.", "jax.")

#: Values that must not travel unseen: modules with a dangerous attribute, builtins
#: that look names up at run time. Used anywhere other than ``x.attr``, ``x(...)``,
#: ``getattr(x, ...)`` or ``alias = x``, they are reported; so is ``getattr(x, <computed>)``.
#: ``torch.nn``, ``torch.nn.functional``, ``math`` are not sensitive: ``getattr(F, activation)``
#: is ordinary and reaches nothing in the tables directly.
_SENSITIVE: frozenset[str] = frozenset(
    key.rsplit(".", n)[0]
    for key in (*_ATTRIBUTES, *_CALL_CHECKS, *_MODULES)
    for n in range(1, key.count(".") + 1)
) | _names(
    "builtins builtins.getattr builtins.vars builtins.globals builtins.locals builtins.__import__ "
    "sys.modules"
)


_BUILTIN_NAMES = frozenset(dir(builtins))


def _expansions(qualname: str) -> Iterator[str]:
    """``qualname`` and its dotted suffixes: re-exports reach the same object."""
    yield qualname
    if qualname.startswith(_NO_SUFFIX_MATCH):
        return
    parts = qualname.split(".")
    for start in range(1, len(parts)):
        yield ".".join(parts[start:])


def _prefixes(qualname: str) -> Iterator[str]:
    parts = qualname.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])


def _lookup_rule(qualname: str) -> tuple[str, _Rule] | None:
    """The rule ``qualname`` (or a re-export of it) falls under, with its canonical name."""
    for name in _expansions(qualname):
        if name in _ATTRIBUTES:
            return name, _ATTRIBUTES[name]
        for prefix in _prefixes(name):
            if prefix in _MODULES:
                return name, _MODULES[prefix]
    return None


def _lookup_check(qualname: str) -> tuple[str, tuple[str, _CallCheck]] | None:
    for name in _expansions(qualname):
        if name in _CALL_CHECKS:
            return name, _CALL_CHECKS[name]
    return None


def _matches(qualnames: Iterable[str], keys: Iterable[str]) -> str | None:
    wanted = frozenset(keys)
    for qualname in qualnames:
        for name in _expansions(qualname):
            if name in wanted:
                return name
    return None


def _is_sensitive(qualname: str) -> bool:
    return "*" not in qualname and any(n in _SENSITIVE for n in _expansions(qualname))


def _text(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(qualname: str) -> str:
    """A pseudo-qualname (``<globals>``) as the user wrote it."""
    names = {"<globals>": "globals()", "<locals>": "locals()", "<this-module>": "this module"}
    return names.get(qualname.removesuffix(".*"), qualname.removesuffix(".*"))


def _mentioned(node: ast.AST) -> Iterator[str]:
    """Every name ``node`` could read a binding through: names, attributes, string keys."""
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name):
            yield inner.id
        elif isinstance(inner, ast.Attribute):
            yield inner.attr
        elif isinstance(inner, ast.Constant) and isinstance(inner.value, str):
            yield inner.value


def _string(node: ast.expr | None) -> str | None:
    value = _literal(node)
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------------------------------
# Scopes: which names are bound where, and to what, so that aliases resolve and a parameter
# named ``compile`` is not the builtin.


class _Scope:
    def __init__(self, kind: str, parent: _Scope | None) -> None:
        self.kind = kind  # "module", "function", "class" or "comprehension"
        self.parent = parent
        self.bound: set[str] = set()
        self.parameters: set[str] = set()
        self.imports: dict[str, set[str]] = {}
        self.aliases: dict[str, list[ast.expr]] = {}
        self.globals: set[str] = set()
        self.nonlocals: set[str] = set()
        self.stars: list[str] = []


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


class _Index:
    """Parent links, the scope of every node and the bindings of every scope of one tree."""

    def __init__(self, tree: ast.Module) -> None:
        self.parent: dict[int, ast.AST] = {}
        self.scope: dict[int, _Scope] = {}
        self.annotations: set[int] = set()  # annotation roots: never a value the code uses
        self.module = _Scope("module", None)
        self._walk(tree, self.module)

    def _target_scope(self, name: str, scope: _Scope) -> _Scope | None:
        if name in scope.globals:
            return self.module
        if name in scope.nonlocals:
            return None  # bound in an enclosing function, which records its own assignments
        return scope

    def _bind(self, name: str, scope: _Scope, value: ast.expr | None = None) -> None:
        target = self._target_scope(name, scope)
        if target is None:
            return
        target.bound.add(name)
        if value is not None:
            target.aliases.setdefault(name, []).append(value)

    def _children(self, node: ast.AST, scope: _Scope, children: Iterable[ast.AST]) -> None:
        for child in children:
            self.parent[id(child)] = node
            self._walk(child, scope)

    def _walk(self, node: ast.AST, scope: _Scope) -> None:
        self.scope[id(node)] = scope
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inner = _Scope("function", scope)
            if not isinstance(node, ast.Lambda):
                self._bind(node.name, scope)
                outer: list[ast.AST] = [*node.decorator_list, node.args]
                if node.returns is not None:
                    outer.append(node.returns)
                    self.annotations.add(id(node.returns))
                body: list[ast.AST] = list(node.body)
            else:
                outer, body = [node.args], [node.body]
            args = node.args
            for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
                if arg is not None:
                    inner.bound.add(arg.arg)
                    inner.parameters.add(arg.arg)
            self._children(node, scope, outer)
            self._children(node, inner, body)
            return
        if isinstance(node, ast.ClassDef):
            self._bind(node.name, scope)
            self._children(node, scope, [*node.decorator_list, *node.bases, *node.keywords])
            self._children(node, _Scope("class", scope), node.body)
            return
        if isinstance(node, _COMPREHENSIONS):
            inner = _Scope("comprehension", scope)
            first, *rest = node.generators
            self.parent[id(first)] = node
            self.scope[id(first)] = inner
            self._children(first, scope, [first.iter])
            self._children(first, inner, [first.target, *first.ifs])
            elements = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            self._children(node, inner, [*rest, *elements])
            return
        self._record(node, scope)
        self._children(node, scope, list(ast.iter_child_nodes(node)))

    def _record(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            self.annotations.add(id(node.annotation))
        if isinstance(node, ast.Global):
            scope.globals.update(node.names)
        elif isinstance(node, ast.Nonlocal):
            scope.nonlocals.update(node.names)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            self._bind(node.id, scope)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                name, qualname = (alias.asname, alias.name) if alias.asname else (top, top)
                self._bind(name, scope)
                self._import(name, qualname, scope)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    scope.stars.append(node.module or "")
                    continue
                name = alias.asname or alias.name
                self._bind(name, scope)
                self._import(
                    name, f"{node.module}.{alias.name}" if node.module else alias.name, scope
                )
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self._bind(target.id, scope, node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            self._bind(node.target.id, scope, node.value)
        elif isinstance(node, ast.NamedExpr):
            # PEP 572: an assignment expression in a comprehension binds in the enclosing scope.
            while scope.kind == "comprehension" and scope.parent is not None:
                scope = scope.parent
            self._bind(node.target.id, scope, node.value)
        elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
            self._bind(node.name, scope)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            self._bind(node.rest, scope)

    def _import(self, name: str, qualname: str, scope: _Scope) -> None:
        target = self._target_scope(name, scope)
        if target is not None:
            target.imports.setdefault(name, set()).add(qualname)

    def lookup(self, name: str, scope: _Scope) -> _Scope | None:
        """The scope whose binding of ``name`` a reference in ``scope`` sees (None: builtin)."""
        current: _Scope | None = scope
        first = True
        while current is not None:
            if current.kind == "class" and not first:
                current = current.parent
                continue
            if name in current.globals:
                return self.module if name in self.module.bound else None
            if name in current.bound:
                return current
            current, first = current.parent, False
        return None


# ---------------------------------------------------------------------------------------------
# String annotations are code: ``typing.get_type_hints``, pydantic and ``functools.singledispatch``
# evaluate them (``x: "os.system('...')"``), so they are parsed and scanned like the rest.

#: Rounds a cycle of bindings is re-resolved (each round can only add names; more than a few
#: only happens for ``a = a.x``, which grows without end).
_FIXPOINT_ROUNDS = 8
_NO_CYCLE = sys.maxsize

_ANNOTATION_DEPTH = 4  # a string holding a string holding ...: deeper ones stay strings


def _annotations_as_code(tree: ast.Module) -> ast.Module:
    """``tree`` with every string inside an annotation (or ``ForwardRef("...")``) replaced
    by the expression it spells, placed at the string's position for ``file:line``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            node.annotation = _code_of(node.annotation, 0)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            node.returns = _code_of(node.returns, 0)
        elif (
            isinstance(node, ast.Call)
            and _called_name(node.func) == "ForwardRef"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            node.args[0] = _code_of(node.args[0], 0)
    return tree


def _called_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def _code_of(node: ast.expr, depth: int) -> ast.expr:
    """The annotation ``node`` as the code a type checker at run time evaluates."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if depth >= _ANNOTATION_DEPTH:
            return node
        try:
            parsed = ast.parse(node.value.strip(), mode="eval").body
        except (SyntaxError, ValueError):
            return node  # evaluating it raises SyntaxError: nothing runs
        for inner in ast.walk(parsed):
            ast.copy_location(inner, node)
        return _code_of(parsed, depth + 1)
    if isinstance(node, ast.Subscript):
        name = _called_name(node.value)
        if name == "Literal":
            return node  # ``Literal["train", "eval"]``: values, never evaluated
        if name == "Annotated" and isinstance(node.slice, ast.Tuple) and node.slice.elts:
            node.slice.elts[0] = _code_of(node.slice.elts[0], depth)  # metadata is not a type
            return node
    for field, value in ast.iter_fields(node):
        if isinstance(value, ast.expr):
            setattr(node, field, _code_of(value, depth))
        elif isinstance(value, list):
            setattr(
                node, field, [_code_of(v, depth) if isinstance(v, ast.expr) else v for v in value]
            )
    return node


# ---------------------------------------------------------------------------------------------
# The per-file visitor.

# Pseudo-qualnames for namespaces: ``globals()``, ``locals()``/``vars()``, and the module itself
# (``sys.modules[__name__]``), whose attributes are its globals.
_GLOBALS, _LOCALS, _THIS_MODULE = "<globals>", "<locals>", "<this-module>"
_NAMESPACE_VALUES = frozenset({_GLOBALS, _LOCALS, _THIS_MODULE})


class _FileScanner(ast.NodeVisitor):
    """Resolves names in one parsed file and reports what the rule tables say about them."""

    def __init__(self, scan: _Scan, display: Path, absolute: Path, tree: ast.Module) -> None:
        self.scan = scan
        self.display = display
        self.absolute = absolute
        self.tree = _annotations_as_code(tree)
        self.index = _Index(self.tree)
        self._memo: dict[int, frozenset[str]] = {}
        # Cycle handling in resolve(): nodes being resolved (with their stack depth), answers
        # that depend on one of them (answer, lowest depth reached, round), and those nodes.
        self._depth: dict[int, int] = {}
        self._provisional: dict[int, tuple[frozenset[str], int, int]] = {}
        self._pending: list[int] = []
        self._low = _NO_CYCLE
        self._epoch = 0

    # -- resolution ----------------------------------------------------------------------------

    def resolve(self, node: ast.AST) -> frozenset[str]:
        """The qualified names ``node`` may evaluate to (empty: unknown or not a named object).

        Bindings may form cycles (``a = b; b = c; c = a; c = os``). Cutting a cycle leaves the
        nodes resolved under the cut with partial answers, so those are kept provisional until
        the node where the cycle closes, which re-resolves its cycle until nothing changes; only
        then is anything memoised (one node per step otherwise: linear in the file).
        """
        key = id(node)
        if key in self._memo:
            return self._memo[key]
        seed = self._provisional.get(key)
        active = self._depth.get(key)
        if active is not None:  # a cycle: what is known so far, and where it closes
            self._low = min(self._low, active)
            return seed[0] if seed is not None else frozenset()
        if seed is not None and seed[2] == self._epoch:  # already resolved in this round
            self._low = min(self._low, seed[1])
            return seed[0]
        depth = len(self._depth)
        self._depth[key] = depth
        outer_low, start = self._low, len(self._pending)
        result: frozenset[str] = frozenset()
        try:
            for _ in range(_FIXPOINT_ROUNDS):
                self._low = _NO_CYCLE
                self.scan.steps += 1
                result = frozenset(c for q in self._resolve(node) for c in self.scan.canonical(q))
                previous = self._provisional.get(key)
                if self._low != depth or (previous is not None and previous[0] == result):
                    break
                self._epoch += 1  # the cycle closes here: go round again with what is known
                self._provisional[key] = (result, depth, self._epoch)
        finally:
            del self._depth[key]
        low = self._low
        self._low = min(outer_low, low)
        if low < depth:  # part of a cycle through a node still being resolved
            for member in self._pending[start:]:  # they depend on it, so on what it depends on
                answer, _, epoch = self._provisional[member]
                self._provisional[member] = (answer, low, epoch)
            self._provisional[key] = (result, low, self._epoch)
            self._pending.append(key)
            return result
        for member in self._pending[start:]:
            if member in self._provisional:
                self._memo[member] = self._provisional.pop(member)[0]
        del self._pending[start:]
        self._provisional.pop(key, None)
        self._memo[key] = result
        return result

    def _resolve(self, node: ast.AST) -> set[str]:
        if isinstance(node, ast.Name):
            return self._resolve_name(node.id, self.index.scope[id(node)])
        if isinstance(node, ast.Attribute):
            return self._attributes(self.resolve(node.value), node.attr)
        if isinstance(node, ast.Subscript):
            if self._is_this_module(node):
                return {_THIS_MODULE}
            key = _string(node.slice)
            containers = self.resolve(node.value)
            if key is None:  # ``vars(F)[name]``: any attribute of F, like getattr(F, name)
                dicts = (c for c in containers if c.endswith(".__dict__"))
                return {f"{c.removesuffix('.__dict__')}.*" for c in dicts}
            return self._lookup_key(containers, key, node)
        if isinstance(node, ast.NamedExpr):
            return set(self.resolve(node.value))
        if isinstance(node, ast.IfExp):  # ``(F if F is not None else nn)``: either one
            return set(self.resolve(node.body) | self.resolve(node.orelse))
        if isinstance(node, ast.BoolOp):  # ``(glob or None)``: any operand
            return {q for value in node.values for q in self.resolve(value)}
        if isinstance(node, ast.Call):
            return self._resolve_call(node)
        return set()

    def _resolve_name(self, name: str, scope: _Scope) -> set[str]:
        if name == "__builtins__":
            return {"builtins"}
        defining = self.index.lookup(name, scope)
        found: set[str] = set()
        if defining is None:
            if name in _BUILTIN_NAMES:
                found.add(f"builtins.{name}")
        else:
            found.update(defining.imports.get(name, ()))
            for value in defining.aliases.get(name, ()):
                found.update(self.resolve(value))
        if defining is None or defining is self.index.module:
            found.update(f"{star}.{name}" if star else name for star in self.index.module.stars)
        return found

    def forget(self) -> None:
        self._memo.clear()
        self._provisional.clear()
        self._pending.clear()

    def warm(self) -> None:
        """Resolve every bound value after the values it names, without recursion.

        ``resolve`` recurses through aliases, so resolving ``a1000`` in ``a1 = os; a2 = a1;
        ... a1000 = a999`` first would nest a thousand calls deep. Resolving the bindings in
        dependency order (an explicit-stack depth-first walk over the names each value
        mentions, in any scope, as a name, attribute or string key) leaves every later lookup
        one memo hit away, so the scan takes time linear in the file however the chain runs.
        """
        values: dict[str, list[ast.expr]] = {}
        for scope in {id(s): s for s in self.index.scope.values()}.values():
            for name, bound in scope.aliases.items():
                values.setdefault(name, []).extend(v for v in bound if v is not None)
        mentions: dict[str, list[str]] = {
            name: sorted(
                {m for value in bound for m in _mentioned(value) if m in values and m != name}
            )
            for name, bound in values.items()
        }
        done: set[str] = set()
        for root in values:
            if root in done:
                continue
            done.add(root)
            stack = [(root, iter(mentions[root]))]
            while stack:
                name, pending = stack[-1]
                following = next((m for m in pending if m not in done), None)
                if following is None:
                    stack.pop()
                    for value in values[name]:
                        self.resolve(value)
                else:
                    done.add(following)
                    stack.append((following, iter(mentions[following])))

    def module_binding(self, name: str) -> set[str]:
        """What ``name`` holds at this file's top level, for ``this_module.name`` elsewhere."""
        module = self.index.module
        if name in module.bound:
            return self._resolve_name(name, module)
        return {f"{star}.{name}" if star else name for star in module.stars}

    def _resolve_call(self, node: ast.Call) -> set[str]:
        func = self.resolve(node.func)
        first = node.args[0] if node.args else None
        importer = _matches(func, _IMPORTERS)
        if importer is not None:
            name = _string(_argument(node, 0, "name"))
            if name is None:
                return set()
            if importer == "pkgutil.resolve_name":
                return {name.replace(":", ".")}
            if importer.endswith("__import__") and _argument(node, 3, "fromlist") is None:
                return {name.split(".")[0]}
            return {name.lstrip(".")}
        if _matches(func, {"builtins.getattr"}) and first is not None and len(node.args) >= 2:
            attribute = _string(node.args[1]) or "*"
            return self._attributes(self.resolve(first), attribute)
        if _matches(func, _MODULE_OF) and first is not None:
            # ``inspect.getmodule(os.getcwd)`` is the module that defines its argument.
            return {q.rsplit(".", 1)[0] for q in self.resolve(first) if "." in q}
        if isinstance(node.func, ast.Call) and first is not None:
            path = self._attrgetter_path(node.func)
            if path:  # ``operator.attrgetter("os.system")(glob)``
                owners: set[str] = set(self.resolve(first))
                for attribute in path.split("."):
                    owners = self._attributes(owners, attribute)
                return owners
        if _matches(func, {"builtins.globals"}):
            return {_GLOBALS}
        if _matches(func, {"builtins.locals"}) or (
            _matches(func, {"builtins.vars"}) and first is None
        ):
            return {_LOCALS}
        if _matches(func, {"builtins.vars"}) and first is not None:
            return {f"{q}.__dict__" for q in self.resolve(first) if not q.startswith("<")}
        if isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            key = _string(first)
            if key:
                return self._lookup_key(self.resolve(node.func.value), key, node)
        return set()

    def _attrgetter_path(self, call: ast.Call) -> str | None:
        """The literal dotted path of ``operator.attrgetter("a.b")``, else None."""
        if _matches(self.resolve(call.func), {"operator.attrgetter"}) is None:
            return None
        return _string(call.args[0]) if len(call.args) == 1 and not call.keywords else None

    def _is_this_module(self, node: ast.Subscript) -> bool:
        """``sys.modules[__name__]``: the module itself, not a computed lookup."""
        key = node.slice
        return (
            isinstance(key, ast.Name)
            and key.id == "__name__"
            and self.index.lookup("__name__", self.index.scope[id(key)]) is None
            and _matches(self.resolve(node.value), {"sys.modules"}) is not None
        )

    def _attributes(self, owners: Iterable[str], attribute: str) -> set[str]:
        found: set[str] = set()
        for owner in owners:
            if owner == _THIS_MODULE:
                if attribute == "*":
                    found.add(f"{owner}.*")
                else:
                    found.update(self._resolve_name(attribute, self.index.module))
            elif not owner.startswith("<"):
                found.add(f"{owner}.{attribute}")
        return found

    def _is_namespace(self, qualname: str) -> bool:
        """A mapping from names to arbitrary objects: globals(), sys.modules, os.__dict__."""
        if qualname in _NAMESPACE_VALUES or _matches([qualname], {"sys.modules"}):
            return True
        return qualname.endswith(".__dict__") and _is_sensitive(qualname[: -len(".__dict__")])

    def _lookup_key(self, containers: Iterable[str], key: str, node: ast.AST) -> set[str]:
        found: set[str] = set()
        for container in containers:
            if container == _GLOBALS:
                found.update(self._resolve_name(key, self.index.module))
            elif container == _LOCALS:
                found.update(self._resolve_name(key, self.index.scope[id(node)]))
            elif _matches([container], {"sys.modules"}):
                found.add(key)
            elif container == "builtins":  # ``__builtins__`` is a dict outside ``__main__``
                found.add(f"builtins.{key}")
            elif container.endswith(".__dict__"):
                found.add(f"{container[: -len('.__dict__')]}.{key}")
        return found

    # -- reporting -----------------------------------------------------------------------------

    def _report(self, node: ast.AST, rule: str, detail: str) -> None:
        line = getattr(node, "lineno", 1)
        column = getattr(node, "col_offset", 0)
        self.scan.add(SafetyFinding(self.display, line, rule, detail), column)

    def _parent(self, node: ast.AST) -> ast.AST | None:
        return self.index.parent.get(id(node))

    def _decoded(self, call: ast.AST | None) -> str:
        """`` (on data decoded by base64.b64decode)`` when a decoder feeds ``call``."""
        if not isinstance(call, ast.Call):
            return ""
        for inner in ast.walk(call):
            if isinstance(inner, ast.Call) and inner is not call:
                decoder = _matches(self.resolve(inner.func), _DECODERS)
                if decoder is not None:
                    return f" (on data decoded by {decoder})"
        return ""

    @staticmethod
    def _aka(node: ast.AST, canonical: str) -> str:
        """`` (o.system is os.system)`` when the source spells the name differently."""
        text = _text(node)
        return "" if canonical in (text, f"builtins.{text}") else f" ({text} is {canonical})"

    def _check_reference(self, node: ast.expr) -> None:
        """Report what ``node`` evaluates to, if the tables know it or cannot follow it."""
        qualnames = self.resolve(node)
        if not qualnames:
            return
        parent = self._parent(node)
        called = isinstance(parent, ast.Call) and parent.func is node
        shown = _text(node) + ("(...)" if called else "")
        reported = False
        for qualname in sorted(qualnames):
            hit = _lookup_rule(qualname)
            if hit is not None:
                key, rule = hit
                decoded = self._decoded(parent) if called and rule.rule == DYNAMIC else ""
                self._report(node, rule.rule, f"{shown} {rule.why}{decoded}{self._aka(node, key)}")
                reported = True
                continue
            check = _lookup_check(qualname)
            if check is not None and not called:
                key, (rule_id, _) = check
                self._report(
                    node,
                    rule_id,
                    f"{shown} passes {key} around without calling it, so its arguments "
                    "cannot be checked",
                )
                reported = True
        if not reported:
            self._check_value_use(node, qualnames, parent)

    def _consumed(self, node: ast.expr, parent: ast.AST | None) -> bool:
        """Whether ``parent`` uses ``node`` in a way the scan follows."""
        if isinstance(parent, ast.Attribute | ast.Subscript) and parent.value is node:
            return True
        if isinstance(parent, ast.Call):
            if parent.func is node:
                return True
            inspectors = {"builtins.getattr", "builtins.hasattr"}
            return (
                bool(parent.args)
                and parent.args[0] is node
                and (_matches(self.resolve(parent.func), inspectors) is not None)
            )
        if isinstance(parent, ast.Assign | ast.AnnAssign):
            # ``o = os`` is followed; in a class body ``C.o`` and ``self.o`` would not be.
            targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
            return (
                parent.value is node
                and all(isinstance(t, ast.Name) for t in targets)
                and self.index.scope[id(parent)].kind != "class"
            )
        return isinstance(parent, ast.NamedExpr) and parent.value is node

    def _in_annotation(self, node: ast.AST) -> bool:
        current: ast.AST | None = node
        while current is not None and not isinstance(current, ast.stmt):
            if id(current) in self.index.annotations:
                return True
            current = self._parent(current)
        return False

    def _check_value_use(
        self, node: ast.expr, qualnames: frozenset[str], parent: ast.AST | None
    ) -> None:
        if self._in_annotation(node):
            return  # ``def f(x: np.ndarray)``: a type, not a value the code passes around
        shown = _text(node)
        if any(self._is_namespace(q) for q in qualnames):
            if qualnames == {_THIS_MODULE} and self._consumed(node, parent):
                return  # ``sys.modules[__name__].name``: resolved through this file's globals
            if isinstance(parent, ast.Subscript) and parent.value is node:
                return  # the key is checked in visit_Subscript
            if isinstance(parent, ast.Compare) and node in parent.comparators:
                return  # ``"timm" in sys.modules``
            grandparent = self._parent(parent) if parent is not None else None
            if (
                isinstance(parent, ast.Attribute)
                and parent.attr == "get"
                and isinstance(grandparent, ast.Call)
                and grandparent.func is parent
                and _string(grandparent.args[0] if grandparent.args else None)
            ):
                return
            if not self._consumed(node, parent) or isinstance(parent, ast.Attribute):
                self._report(
                    node,
                    DYNAMIC,
                    f"{shown} gives access to names the source does not spell out "
                    "(any loaded module, or the builtins eval, exec and __import__)",
                )
            return
        sensitive = sorted(q for q in qualnames if _is_sensitive(q))
        if sensitive and not self._consumed(node, parent):
            self._report(
                node,
                DYNAMIC,
                f"{shown} is stored, passed or returned as a value{self._aka(node, sensitive[0])}, "
                "so the scan cannot follow what is done with it",
            )

    # -- visitors ------------------------------------------------------------------------------

    def discover(self) -> None:
        """Queue the local modules this file imports (before any file is checked, so that
        ``helper.name`` can be resolved through helper's own bindings)."""
        self.warm()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self._follow(alias, alias.name, 0, [])
            elif isinstance(node, ast.ImportFrom):
                names = [alias.name for alias in node.names if alias.name != "*"]
                self._follow(node, node.module, node.level, names)
            elif isinstance(node, ast.Call) and _matches(self.resolve(node.func), _IMPORTERS):
                name = _string(_argument(node, 0, "name"))
                if name is not None and ":" not in name:
                    stripped = name.lstrip(".")
                    self._follow(node, stripped or None, len(name) - len(stripped), [])
            elif isinstance(node, ast.Call) and _matches(
                self.resolve(node.func), _PARENT_IMPORTERS
            ):
                name = _string(_argument(node, 0, "name")) or ""
                if "." in name.lstrip("."):
                    parent = name.lstrip(".").rpartition(".")[0]
                    self._follow(node, parent, len(name) - len(name.lstrip(".")), [])
            elif isinstance(node, ast.Call) and _matches(self.resolve(node.func), _PACKAGE_WALKERS):
                self.scan.enqueue_packages()

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_import(alias, alias.name, f"import {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            qualname = module if alias.name == "*" else f"{module}.{alias.name}".lstrip(".")
            written = "." * node.level + module
            self._check_import(alias, qualname, f"from {written} import {alias.name}")

    def _check_import(self, node: ast.AST, qualname: str, written: str) -> None:
        hit = _lookup_rule(qualname) if qualname else None
        if hit is not None:
            key, rule = hit
            self._report(node, rule.rule, f"{written}: {key} {rule.why}")

    def _follow(self, node: ast.AST, module: str | None, level: int, names: list[str]) -> None:
        for name, display, absolute, compiled in self.scan.locate(
            self.absolute, module, level, names
        ):
            self.scan.register(name, absolute)
            if compiled:
                self._report(
                    node,
                    NATIVE,
                    f"imports {display}, a compiled module whose source the scan cannot read",
                )
            else:
                self.scan.enqueue(display, absolute)

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            return
        scope = self.index.scope[id(node)]
        if node.id in _HIDDEN_NAMES and self.index.lookup(node.id, scope) is None:
            self._report(node, DYNAMIC, f"{node.id} reaches eval, exec and __import__ unseen")
        self._check_reference(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in _INTROSPECTION:
            self._report(node, DYNAMIC, f"{_text(node)} reaches interpreter internals")
        elif node.attr == "__code__" and not isinstance(node.ctx, ast.Load):
            self._report(node, DYNAMIC, f"{_text(node)} replaces a function's code")
        if not isinstance(node.ctx, ast.Load):
            self._check_module_assignment(node)
        if isinstance(node.ctx, ast.Load):
            owners = self.resolve(node.value)
            self._check_module_internals(node, owners)
            parent = self._parent(node)
            method = _METHODS.get(node.attr)
            called = isinstance(parent, ast.Call) and parent.func is node
            if method is not None and not called and not self._known(owners, node.attr):
                self._report(node, method.rule, f"{_text(node)} {method.why}")
            self._check_dangerous_name(node, owners)
            if any(q.endswith(".*") for q in owners):
                self._report(
                    node,
                    DYNAMIC,
                    f"{_text(node)} takes an attribute of an object looked up by a computed name, "
                    "which may be a module",
                )
            self._check_reference(node)
        self.generic_visit(node)

    def _check_module_assignment(self, node: ast.Attribute) -> None:
        """``tempfile.tempdir = victim``: replacing a standard module's setting changes what
        every later caller does (where temp files go, which program runs)."""
        owner = _matches(self.resolve(node.value), _PRIVATE_GUARDED)
        if owner == "tempfile":
            self._report(
                node, FILE_WRITE, f"{_text(node)} redirects every temporary file and directory"
            )
        elif owner is not None:
            self._report(
                node,
                DYNAMIC,
                f"{_text(node)} replaces part of {owner}, changing what code that uses it runs",
            )

    def _check_dangerous_name(self, node: ast.Attribute, owners: frozenset[str]) -> None:
        """``<anything>.system``: unless the base resolves to names the tables judge, the base
        may be a module reached in a way the resolver cannot follow, so the name decides. A
        parameter is no exception (``def f(self, os): os.system``): its caller may be out of
        the scan's sight (a framework, ``map``, a callback)."""
        rule = _DANGEROUS_NAMES.get(node.attr)
        if rule is None:
            return
        unknown = not owners or any("<" in q or "*" in q for q in owners)
        if unknown and not self._known(owners, node.attr):
            self._report(
                node,
                rule.rule,
                f"{_text(node)} {rule.why}; if it is your own object, rename the attribute",
            )

    def _check_patch_target(self, node: ast.Call) -> None:
        """``mock.patch("os.system")`` imports ``os`` and hands ``os.system`` back."""
        shown = f"{_text(node.func)}(...)"
        target = _string(_argument(node, 0, "target"))
        if target is None:
            self._report(
                node,
                DYNAMIC,
                f"{shown} imports a module named at run time and hands out its attributes",
            )
            return
        hit = _lookup_rule(target) or _lookup_check(target)
        if hit is not None:
            key, found = hit
            rule = found.rule if isinstance(found, _Rule) else found[0]
            self._report(
                node,
                rule,
                f"{shown} imports {key} by name and hands it back (patch(...).get_original())",
            )

    def _check_name_getter(self, node: ast.Call) -> None:
        """``operator.attrgetter(name)`` and ``methodcaller(name)`` look names up by string."""
        shown = f"{_text(node.func)}(...)"
        if _unpacks(node) or not node.args:
            self._report(node, DYNAMIC, f"{shown} looks up attributes the scan cannot read")
            return
        for argument in (
            node.args
            if _matches(self.resolve(node.func), {"operator.attrgetter"})
            else node.args[:1]
        ):
            path = _string(argument)
            if path is None:
                self._report(
                    node,
                    DYNAMIC,
                    f"{shown} looks up an attribute by a name computed at run time, which can "
                    "reach any module's functions (spell the attribute out instead)",
                )
                return
            rule = _DANGEROUS_NAMES.get(path.rsplit(".", 1)[-1])
            if rule is not None:
                self._report(node, rule.rule, f"{shown} looks up {path!r}, which {rule.why}")

    def _known(self, owners: Iterable[str], attribute: str) -> bool:
        """Whether the tables decide ``owner.attribute`` (so method-name rules stay out)."""
        return any(
            _lookup_rule(f"{q}.{attribute}") or _lookup_check(f"{q}.{attribute}") for q in owners
        )

    def _check_module_internals(self, node: ast.Attribute, owners: frozenset[str]) -> None:
        """``os._execvpe``, ``os.__getattribute__(...)``: back doors to the table entries."""
        attribute = node.attr
        private = attribute.startswith("_") and not attribute.endswith("__")
        for owner in sorted(owners):
            if private and _matches([owner], _PRIVATE_GUARDED):
                self._report(
                    node,
                    DYNAMIC,
                    f"{_text(node)} uses a private helper of {owner}, which the rules cannot judge",
                )
                return
            if attribute in ("__getattribute__", "__getattr__") and _is_sensitive(owner):
                self._report(node, DYNAMIC, f"{_text(node)} looks names up on {owner} unseen")
                return

    def visit_Subscript(self, node: ast.Subscript) -> None:
        containers = [q for q in self.resolve(node.value) if self._is_namespace(q)]
        if containers and not self._is_this_module(node):
            key = _string(node.slice)
            if key is None:
                self._report(
                    node,
                    DYNAMIC,
                    f"{_text(node)} looks up a computed name in {_describe(containers[0])}, "
                    "which can reach any module or builtin",
                )
            elif key == "__builtins__":
                self._report(node, DYNAMIC, f"{_text(node)} reaches eval, exec and __import__")
        if isinstance(node.ctx, ast.Load):
            self._check_reference(node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = self.resolve(node.func)
        shown = f"{_text(node.func)}(...)"
        for qualname in sorted(func):
            found = _lookup_check(qualname)
            if found is not None:
                key, (rule, check) = found
                why = check(node)
                if why is not None:
                    decoded = self._decoded(node) if rule == UNPICKLING else ""
                    self._report(node, rule, f"{shown} {why}{decoded}{self._aka(node.func, key)}")
        if _matches(func, _IMPORTERS) is not None:
            self._check_importer(node)
        if _matches(func, _NAME_GETTERS) is not None:
            self._check_name_getter(node)
        if _matches(func, _PATCHERS) is not None:
            self._check_patch_target(node)
        if _matches(func, {"builtins.getattr"}) and len(node.args) >= 2:
            self._check_getattr(node)
        if isinstance(node.func, ast.Attribute):
            self._check_method(node, node.func)
            owners = self.resolve(node.func.value)
            if (
                node.func.attr == "get"
                and any(self._is_namespace(q) for q in owners)
                and _string(_argument(node, 0, "key")) == "__builtins__"
            ):
                self._report(node, DYNAMIC, f"{_text(node)} reaches eval, exec and __import__")
        for keyword in node.keywords:
            if keyword.arg == "trust_remote_code" and _literal(keyword.value) is not False:
                self._report(
                    keyword.value,
                    DYNAMIC,
                    f"{shown} with trust_remote_code runs Python code downloaded from the Hub",
                )
        self._check_reference(node)
        self.generic_visit(node)

    def _check_importer(self, node: ast.Call) -> None:
        """A literal name was followed in discover() and resolves like an import."""
        if _string(_argument(node, 0, "name")) is None:
            self._report(
                node,
                DYNAMIC,
                f"{_text(node)} imports a module whose name is computed at run time"
                f"{self._decoded(node)}",
            )

    def _check_getattr(self, node: ast.Call) -> None:
        attribute = _string(node.args[1])
        method = _METHODS.get(attribute or "")
        if attribute in _INTROSPECTION:
            self._report(node, DYNAMIC, f"{_text(node)} reaches interpreter internals")
        elif (
            method is not None
            and attribute is not None
            and not self._known(self.resolve(node.args[0]), attribute)
        ):
            self._report(node, method.rule, f"{_text(node)} {method.why}")
        if attribute is not None:
            return
        owners = sorted(
            q
            for q in self.resolve(node.args[0])
            if q.endswith(".*") or q == _THIS_MODULE or _is_sensitive(q)
        )
        if owners:
            self._report(
                node,
                DYNAMIC,
                f"{_text(node)} looks up a computed name on {_describe(owners[0])}, which can "
                f"reach any of its attributes{self._decoded(node)} (map the allowed names to "
                "objects in a dict instead)",
            )

    def _check_method(self, node: ast.Call, func: ast.Attribute) -> None:
        owners = self.resolve(func.value)
        name = func.attr
        if self._known(owners, name):
            return  # the tables know this one; _check_reference or visit_Call reported it
        shown = f"{_text(func)}(...)"
        rule = _METHODS.get(name)
        if rule is not None:
            self._report(node, rule.rule, f"{shown} {rule.why}")
        elif name in ("rename", "replace") and not owners and _is_path_move(node):
            self._report(node, FILE_WRITE, f"{shown} moves a file (as Path.{name} does)")
        elif name == "open":
            mode = _argument(node, None, "mode")
            if (
                mode is None
                and node.args
                and re.fullmatch(r"[rwxabtU+]+", _string(node.args[0]) or "-")
            ):
                mode = node.args[0]
            if mode is not None:
                value = _literal(mode)
                if not isinstance(value, str):
                    self._report(node, FILE_WRITE, f"{shown} opens a file with a computed mode")
                elif _WRITE_MODE.search(value):
                    self._report(
                        node, FILE_WRITE, f"{shown} opens a file for writing (mode {value!r})"
                    )


def _is_path_move(call: ast.Call) -> bool:
    """``p.rename(target)``: one positional argument, unlike ``str.replace(old, new)``."""
    if len(call.args) != 1 or call.keywords or isinstance(call.args[0], ast.Starred):
        return False
    return _literal(call.args[0]) is not None


# ---------------------------------------------------------------------------------------------
# The scan: a queue of files (the model file, then its local imports), each scanned once.

_COMPILED_SUFFIXES = (*EXTENSION_SUFFIXES, *BYTECODE_SUFFIXES)


class _Scan:
    """The model file, then each local module it imports (transitively), each scanned once."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.root = Path(os.path.abspath(top)).parent
        #: Folders whose modules an import can reach by name: the model's folder (the loader
        #: puts it first on the import path) and the current directory when it is on the
        #: import path (``python -m pytest`` puts it there).
        self.roots = [self.root]
        cwd = Path(os.getcwd())
        if cwd != self.root and ("" in sys.path or os.getcwd() in sys.path):
            self.roots.append(cwd)
        self._queue: list[tuple[Path, Path]] = []
        self._seen: set[Path] = set()
        self._scanners: dict[Path, _FileScanner] = {}
        self._modules: dict[str, set[Path]] = {}  # local module name -> its files
        self._found: dict[tuple[str, int, str], tuple[SafetyFinding, int]] = {}
        self._canonical: dict[str, frozenset[str]] = {}
        self._canonical_active: set[str] = set()
        #: Expressions and names resolved from scratch (not from a memo): linear in the size
        #: of the files, however the aliases are chained; tests read it to prove so.
        self.steps = 0
        self.enqueue(top, Path(os.path.abspath(top)))
        for folder in self.roots:
            for path in _shadowing_files(folder):
                self.enqueue(self._display(path), path)

    def enqueue(self, display: Path, absolute: Path) -> None:
        real = absolute.resolve()
        if real not in self._seen:
            self._seen.add(real)
            self._queue.append((display, absolute))

    def enqueue_packages(self) -> None:
        """Every package under the import folders: ``pkgutil.walk_packages`` imports each one it
        finds (at most ``_MAX_WALKED`` files; more is refused, not sampled)."""
        inits = [
            init
            for folder in self.roots
            for init in sorted(folder.rglob("__init__.py"))
            if "site-packages" not in init.parts
        ]
        if len(inits) > _MAX_WALKED:
            detail = (
                f"walks the packages of {len(inits)} folders, more than the scan reads "
                f"({_MAX_WALKED}); move the model into a folder of its own"
            )
            self.add(SafetyFinding(self.top, 1, DYNAMIC, detail), 0)
            return
        for init in inits:
            self.enqueue(self._display(init), init)

    def register(self, name: str, absolute: Path) -> None:
        """Record that importing ``name`` runs ``absolute`` (for :meth:`canonical`)."""
        self._modules.setdefault(name, set()).add(absolute.resolve())

    def add(self, finding: SafetyFinding, column: int) -> None:
        # One finding per rule and line: the first report is the outermost expression
        # (``subprocess.run(...)`` rather than its parts ``subprocess.run`` and ``subprocess``).
        key = (str(finding.path), finding.line, finding.rule)
        self._found.setdefault(key, (finding, column))

    def canonical(self, qualname: str) -> frozenset[str]:
        """``helper.o.system`` is also ``os.system`` when local helper.py did ``import os as o``
        (or ``o = os``): names reached through a local module resolve through its bindings.

        Memoised per name: a chain of modules each re-binding the last one's name is resolved
        once per link, not once per path through the chain (which grows exponentially)."""
        if "." not in qualname:
            return frozenset({qualname})
        known = self._canonical.get(qualname)
        if known is not None:
            return known
        if qualname in self._canonical_active:  # ``a.x`` is ``b.x`` is ``a.x``
            return frozenset({qualname})
        self._canonical_active.add(qualname)
        try:
            found = self._follow_bindings(qualname)
        finally:
            self._canonical_active.discard(qualname)
        self._canonical[qualname] = found
        return found

    def _follow_bindings(self, qualname: str) -> frozenset[str]:
        self.steps += 1
        parts = qualname.split(".")
        for end in range(len(parts) - 1, 0, -1):
            found: set[str] = set()
            for real in sorted(self._modules.get(".".join(parts[:end]), ())):
                scanner = self._scanners.get(real)
                if scanner is None:
                    continue
                for target in scanner.module_binding(parts[end]):
                    if target != qualname and "<" not in target:
                        found |= self.canonical(".".join([target, *parts[end + 1 :]]))
            if found:
                return frozenset(found | {qualname})
        return frozenset({qualname})

    def run(self) -> list[SafetyFinding]:
        scanners: list[_FileScanner] = []
        while self._queue:
            display, absolute = self._queue.pop(0)
            tree = _parse(display, absolute)
            try:
                scanner = _FileScanner(self, display, absolute, tree)
                scanner.discover()
            except RecursionError:
                self._too_deep(display)
                continue
            self._scanners[absolute.resolve()] = scanner
            scanners.append(scanner)
        self._canonical.clear()  # resolved while files were still being found: redo
        for scanner in scanners:
            scanner.forget()
        for scanner in reversed(scanners):  # imported modules first: their names feed others
            try:
                scanner.warm()
            except RecursionError:
                self._too_deep(scanner.display)
        for scanner in scanners:
            try:
                scanner.visit(scanner.tree)
            except RecursionError:
                self._too_deep(scanner.display)
        ordered = sorted(
            self._found.values(), key=lambda item: (str(item[0].path), item[0].line, item[1])
        )
        return [finding for finding, _ in ordered]

    def _too_deep(self, display: Path) -> None:
        """Python parses deeper nesting than a recursive visitor can walk: refuse, not guess."""
        detail = "nests expressions too deeply for the scan to read, so it cannot vouch for it"
        self.add(SafetyFinding(display, 1, DYNAMIC, detail), 0)

    # -- local module lookup, mirroring the import system's FileFinder ------------------------

    def locate(
        self, importer: Path, module: str | None, level: int, names: list[str]
    ) -> list[tuple[str, Path, Path, bool]]:
        """Local files an import runs: ``(module name, display, absolute, compiled)``."""
        if level == 0:
            bases = list(dict.fromkeys([*self.roots, importer.parent]))
        else:
            base = importer.parent
            for _ in range(level - 1):
                base = base.parent
            bases = [base]
        parts = module.split(".") if module else []
        found: list[tuple[str, Path, bool]] = []
        for base in bases:
            if not self._inside(base):
                continue
            located = self._module(base, parts)
            if located is None:
                continue
            files, package = located
            found.extend(files)
            if package is not None:
                for name in names:
                    submodule = self._module(package, [name])
                    if submodule is not None:
                        prefix = f"{module}." if module else ""
                        found.extend((prefix + n, p, c) for n, p, c in submodule[0])
        return [(name, self._display(path), path, compiled) for name, path, compiled in found]

    def _inside(self, path: Path) -> bool:
        candidate = os.path.normpath(path)
        return any(
            candidate == str(root) or candidate.startswith(str(root).rstrip(os.sep) + os.sep)
            for root in self.roots
        )

    def _display(self, path: Path) -> Path:
        return self.top.parent / os.path.relpath(os.path.normpath(path), self.root)

    def _module(
        self, base: Path, parts: list[str]
    ) -> tuple[list[tuple[str, Path, bool]], Path | None] | None:
        """Files run by importing ``parts`` under ``base`` (with their module names), and the
        package directory reached (None for a plain module); None when nothing is there."""
        files: list[tuple[str, Path, bool]] = []
        directory = base
        for position, part in enumerate(parts):
            entry = self._entry(directory, part)
            if entry is None:
                return None if position == 0 else (files, None)
            entry_files, package = entry
            name = ".".join(parts[: position + 1])
            files.extend((name, path, compiled) for path, compiled in entry_files)
            if package is None:
                return files, None
            directory = package
        return files, directory

    @staticmethod
    def _variants(stem: Path) -> list[tuple[Path, bool]]:
        found = [(stem.with_name(stem.name + ".py"), False)]
        found += [(stem.with_name(stem.name + suffix), True) for suffix in _COMPILED_SUFFIXES]
        return [(path, compiled) for path, compiled in found if path.is_file()]

    def _entry(
        self, directory: Path, name: str
    ) -> tuple[list[tuple[Path, bool]], Path | None] | None:
        package = directory / name
        if package.is_dir():
            init = self._variants(package / "__init__")
            if init:
                return init, package
        module = self._variants(package)
        if module:
            return module, None
        if package.is_dir():
            return [], package  # a namespace package: nothing runs, submodules may
        return None


#: The most package ``__init__`` files a ``pkgutil.walk_packages`` call makes the scan read.
_MAX_WALKED = 500


def _shadowing_files(folder: Path) -> list[Path]:
    """Files in ``folder`` that run when something else imports a module by name: a file named
    like a standard-library module (``json.py``), like the C accelerator a standard module
    imports first (``_statistics.py``: ``import statistics`` runs it), like a module installed
    elsewhere on the import path, or ``sitecustomize``/``usercustomize`` (run at start-up)."""
    elsewhere = [
        entry
        for entry in sys.path
        if entry and os.path.isdir(entry) and Path(entry).resolve() != folder.resolve()
    ]
    found = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.is_file() and entry.suffix == ".py":
            name, path = entry.stem, entry
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            name, path = entry.name, entry / "__init__.py"
        else:
            continue
        if not name.isidentifier():
            continue
        loaded = getattr(sys.modules.get(name), "__file__", None)
        if loaded is not None and Path(loaded).resolve() == path.resolve():
            continue  # the module already imported from here (a project run from its checkout)
        if (
            name in _STARTUP_MODULES
            or name in sys.stdlib_module_names
            or name in sys.builtin_module_names
            or importlib.machinery.PathFinder.find_spec(name, elsewhere) is not None
        ):
            found.append(path)
    return found


def _parse(display: Path, absolute: Path) -> ast.Module:
    """Parse without running; every failure is a SyntaxError that names the file."""
    source = absolute.read_bytes()
    try:
        return ast.parse(source, filename=str(display))
    except SyntaxError as exc:
        if not exc.filename:  # NUL bytes: the parser does not say which file
            exc.filename, exc.lineno = str(display), exc.lineno or 1
        raise
    except (ValueError, UnicodeDecodeError) as exc:  # the same, on other versions
        raise SyntaxError(str(exc), (str(display), 1, 0, None)) from exc
    except (RecursionError, MemoryError) as exc:  # the parser's stack; import fails alike
        message = "expressions nested too deeply to parse"
        raise SyntaxError(message, (str(display), 1, 0, None)) from exc


def scan_model_file(path: Path) -> list[SafetyFinding]:
    """Scan a model file and its local imports without running them.

    Returns every finding, sorted by path and line; an empty list means the scan found nothing
    it knows to be dangerous (a static scan cannot see everything; docs/models.md says what). Raises
    ``SyntaxError`` (with the offending file name) when the file or a local module it imports
    does not parse, and ``OSError`` when the file cannot be read.
    """
    return _Scan(Path(path)).run()
