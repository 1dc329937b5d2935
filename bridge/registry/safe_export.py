"""Loading ``torch.export`` archives (``.pt2``) without running anything they carry.

``torch.export.load`` trusts its archive: it unpickles members without ``weights_only``
(``data/sample_inputs/<model>.pt`` falls back to a full unpickle when the safe one fails, pickled
weights and constants are unpickled in full, ``opaque_obj_*`` constants with :mod:`pickle`),
loads compiled shared libraries (``data/aotinductor/``), hands every symbolic shape of the
program JSON to ``sympy.sympify`` (which evaluates it with ``eval``), compiles the program's
``guards_code`` with ``exec`` into a function run on every forward call, resolves node targets
to any callable reachable from ``torch``, ``math`` or ``operator``, and writes names of the JSON
into the Python source of the module it generates. Any of these runs code chosen by whoever
wrote the archive.

:func:`load_exported_program` therefore reads the archive once into memory and, before torch
sees it:

1. accepts only the members a ``torch.export.save`` of a plain program writes (refusing, by
   name, shared libraries, pickled objects, legacy pickled weights and anything unknown);
2. requires every weight and constant to be a raw tensor payload (no ``use_pickle``);
3. unpickles the sample inputs itself with ``weights_only=True`` and stores them again with
   ``torch.save``, so that torch never meets the archive's own pickle;
4. checks the program JSON: node targets are operators (``torch.ops.*``; of the higher-order
   ones, control flow and modes only) or symbolic arithmetic, symbolic expressions are sympy
   constructors of symbols and numbers, guards are comparisons of input sizes, and every other
   string is a (dotted) identifier (free text, such as stack traces, has no control character);

then loads the rebuilt archive with ``torch.export.load`` and checks the graph it got (every
call is an operator). Every refusal names the archive member and the value.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import math
import operator
import os
import re
import tokenize
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class UnsafeArchiveError(ValueError):
    """A ``torch.export`` archive holds something that could run code, or is malformed.

    Parameters
    ----------
    source
        The archive file.
    member
        The member at fault (empty when the archive as a whole is).
    reason
        What is wrong.
    """

    def __init__(self, source: str, member: str, reason: str) -> None:
        self.source = source
        self.member = member
        self.reason = reason
        where = f"member {member!r}: " if member else ""
        super().__init__(f"{source}: refused: {where}{reason}")


_ROOT_FILES = {"archive_format", "archive_version", "byteorder", ".data/version"}
_ROOT_FILES_FREE = {".data/serialization_id"}
_MODEL = r"(?P<model>[A-Za-z_][A-Za-z0-9_]*)"
_MODEL_JSON = re.compile(rf"^models/{_MODEL}\.json$")
_SAMPLE_INPUTS = re.compile(rf"^data/sample_inputs/{_MODEL}\.pt$")
_WEIGHTS_CONFIG = re.compile(rf"^data/weights/{_MODEL}_weights_config\.json$")
_CONSTANTS_CONFIG = re.compile(rf"^data/constants/{_MODEL}_constants_config\.json$")
_WEIGHT = re.compile(r"^data/weights/weight_[0-9]+$")
_CONSTANT = re.compile(r"^data/constants/tensor_[0-9]+$")
_EXTRA = re.compile(r"^extra/[^/]+(/[^/]+)*$")

#: Members refused by prefix, with the reason.
_REFUSED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("data/aotinductor/", "compiled native code (an AOTInductor package); torch would load it"),
    ("data/constants/custom_obj_", "a pickled TorchScript object (a torchbind constant)"),
    ("data/constants/opaque_obj_", "a pickle of Python objects, which torch unpickles in full"),
    ("data/executorch/", "an ExecuTorch program"),
    ("data/mtia", "an MTIA payload"),
    ("xl_model_weights/", "external weights"),
)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_FLOAT_WORDS = {"Infinity", "-Infinity", "NaN"}
# free text may hold newlines and tabs, never a carriage return (a line break to Python's
# compiler, should torch ever write the text into generated source) nor another control character
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
#: Keys whose string values are free text that torch stores but never evaluates or compiles.
_FREE_TEXT_KEYS = {"as_string", "as_strings", "torch_version", "verifiers", "in_spec", "out_spec"}
_OPERATOR_TARGET = re.compile(r"^torch\.ops\.[A-Za-z_]\w*\.[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$")
# higher-order operators whose arguments are graphs, tensors and numbers (control flow, grad and
# autocast modes, effects); others (e.g. invoke_leaf_function, which calls Python callables)
# are refused
_HIGHER_ORDER = frozenset(
    """cond while_loop map_impl scan associative_scan wrap_with_set_grad_enabled
    wrap_with_autocast invoke_subgraph auto_functionalized auto_functionalized_v2
    with_effects""".split()
)
_SYMBOLIC_TARGETS = frozenset(
    [f"_operator.{n}" for n in ("getitem", "eq", "ne", "le", "ge", "lt", "gt", "neg", "pos")]
    + [f"_operator.{n}" for n in ("mul", "add", "sub", "floordiv", "mod", "pow", "truediv")]
    + [f"_operator.{n}" for n in ("and_", "or_", "lshift", "rshift")]
    + ["math.trunc"]
    + [f"torch.sym_{n}" for n in ("not", "int", "float", "ite", "max", "min", "sqrt")]
)

# sympy names a symbolic expression may call: torch's shape functions (the deserializer's own
# table) and the sympy classes srepr writes; anything else is refused, never looked up
_SYMPY_NAMES = frozenset(
    """FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift
    RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator
    TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity Add Mul Pow Integer Rational
    Float Symbol Max Min Eq Ne Lt Le Gt Ge StrictLessThan StrictGreaterThan LessThan GreaterThan
    Equality Unequality And Or Not Xor BooleanTrue BooleanFalse true false oo zoo nan int_oo
    Infinity NegativeInfinity ComplexInfinity NaN Zero One NegativeOne Half Abs floor ceiling sqrt
    Piecewise ExprCondPair ITE True False None""".split()
)
_SYMPY_KEYWORDS = frozenset(
    """positive negative nonnegative nonpositive integer real finite infinite zero nonzero even
    odd rational commutative precision extended_real extended_positive extended_negative
    extended_nonnegative extended_nonpositive extended_nonzero""".split()
)
_SYMBOL = re.compile(r"^[a-z]+[0-9]+$")
_OPAQUE_FUNCTION = re.compile(r"^OpaqueUnaryFn_[a-z0-9]+$")
_SYMPY_STRING = re.compile(r"""^('[A-Za-z0-9_.+\-]*'|"[A-Za-z0-9_.+\-]*")$""")
_SYMPY_OPS = frozenset("( ) , + - * / ** // % = == != < <= > >= & | ~".split())

_GUARD_FUNCTIONS = frozenset(
    {"max", "min", "abs", "int", "float", "bool", "round", "IsNonOverlappingAndDenseIndicator"}
)
_GUARD_MATH = frozenset(
    {"floor", "ceil", "trunc", "sqrt", "pow", "exp", "log", "log2", "isnan", "isinf", "fabs"}
)
_GUARD_MATH_VALUES = frozenset({"inf", "nan", "pi", "e"})
_GUARD_TENSOR_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_GUARD_TENSOR_ATTRS = frozenset({"shape", "ndim"})
_GUARD_NODES = (
    ast.Expression, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Constant, ast.Call,
    ast.Subscript, ast.Attribute, ast.Name, ast.Load, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt,
    ast.GtE, ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Add, ast.Sub, ast.Mult, ast.Div,
    ast.FloorDiv, ast.Mod, ast.Pow,
)  # fmt: skip


# -- the archive ----------------------------------------------------------------------------------


def load_exported_program(path: Path) -> Any:
    """Load a ``.pt2`` archive after the checks of the module docstring.

    Parameters
    ----------
    path
        The archive.

    Returns
    -------
    torch.export.ExportedProgram

    Raises
    ------
    UnsafeArchiveError
        Naming the archive, the member and the value that could run code or is malformed.
    OSError
        If the file cannot be read.
    """
    import torch

    source = str(path)
    rebuilt = sanitized_archive(path.read_bytes(), source)
    with weights_only_torch_load():  # the rebuilt archive's only pickle holds tensors
        program = torch.export.load(io.BytesIO(rebuilt))
    check_graph(program, source)
    return program


@contextlib.contextmanager
def weights_only_torch_load() -> Iterator[None]:
    """Every ``torch.load`` inside is ``weights_only=True``, whatever its caller asks for.

    ``torch.export.load`` calls ``torch.load(..., weights_only=False)`` on weights, constants and
    as a fallback for sample inputs; :func:`sanitized_archive` leaves it nothing but tensors to
    read, and this makes that a property of the call too (torch's
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``; the variable is restored afterwards).
    """
    names = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def sanitized_archive(data: bytes, source: str) -> bytes:
    """The archive rebuilt from its checked members, sample inputs stored again by torch.

    Raises
    ------
    UnsafeArchiveError
        See :func:`load_exported_program`.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnsafeArchiveError(source, "", f"not a zip archive ({exc})") from None
    members = _archive_members(infos, source)
    contents: dict[str, bytes] = {}
    for rest, info in members.items():
        try:
            contents[rest] = archive.read(info)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
            raise UnsafeArchiveError(source, info.filename, f"cannot be read ({exc})") from None
    root = next(iter(members.values())).filename.split("/", 1)[0]

    def named(rest: str) -> str:
        return f"{root}/{rest}"

    if contents.get("archive_format", b"").strip() != b"pt2":
        raise UnsafeArchiveError(source, named("archive_format"), "is not 'pt2'")
    for rest, raw in contents.items():
        if _MODEL_JSON.match(rest):
            check_program_json(_json(raw, source, named(rest)), source, named(rest))
        elif _WEIGHTS_CONFIG.match(rest) or _CONSTANTS_CONFIG.match(rest):
            _check_payload_config(_json(raw, source, named(rest)), rest, contents, source, root)
    for rest in list(contents):
        if _SAMPLE_INPUTS.match(rest):
            contents[rest] = _resaved_sample_inputs(contents[rest], source, named(rest))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as rebuilt:
        for rest, raw in contents.items():
            rebuilt.writestr(named(rest), raw)
    return out.getvalue()


def _archive_members(infos: list[zipfile.ZipInfo], source: str) -> dict[str, zipfile.ZipInfo]:
    """Member path below the archive's root folder -> its entry, every member accepted."""
    members: dict[str, zipfile.ZipInfo] = {}
    roots = set()
    for info in infos:
        name = info.filename
        if info.is_dir():
            continue
        root, sep, rest = name.partition("/")
        if not sep or not root or "\\" in name or ".." in name.split("/") or name.startswith("/"):
            raise UnsafeArchiveError(source, name, "is not a path below the archive's folder")
        roots.add(root)
        if len(roots) > 1:
            raise UnsafeArchiveError(
                source, name, f"lies outside the archive's folder {sorted(roots)[0]!r}"
            )
        if rest in members:
            raise UnsafeArchiveError(source, name, "appears twice in the archive")
        reason = _refusal(rest)
        if reason:
            raise UnsafeArchiveError(source, name, reason)
        members[rest] = info
    if not members:
        raise UnsafeArchiveError(source, "", "the archive is empty")
    return members


def _refusal(rest: str) -> str:
    """Why a member (path below the root folder) is refused; empty when it is accepted."""
    for prefix, what in _REFUSED_PREFIXES:
        if rest.startswith(prefix):
            return f"is {what}; mlbridge loads plain exported programs only"
    accepted = (
        rest in _ROOT_FILES
        or rest in _ROOT_FILES_FREE
        or any(
            p.match(rest)
            for p in (
                _MODEL_JSON,
                _SAMPLE_INPUTS,
                _WEIGHTS_CONFIG,
                _CONSTANTS_CONFIG,
                _WEIGHT,
                _CONSTANT,
                _EXTRA,
            )  # fmt: skip
        )
    )
    if accepted:
        return ""
    if rest.endswith((".pt", ".pkl", ".pickle")):
        return (
            "is a pickle that torch would unpickle in full (a legacy or unknown payload); "
            "mlbridge loads plain exported programs only (save them again with "
            "torch.export.save of a current torch)"
        )
    return "is not a member torch.export.save writes for a plain program"


def _json(raw: bytes, source: str, member: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeArchiveError(source, member, f"is not valid JSON ({exc})") from None


def _check_payload_config(
    config: Any, rest: str, contents: dict[str, bytes], source: str, root: str
) -> None:
    """Every weight/constant of a payload config is a raw tensor payload of the archive."""
    member = f"{root}/{rest}"
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise UnsafeArchiveError(source, member, "has no 'config' table")
    folder = rest.rsplit("/", 1)[0]
    payload = _WEIGHT if folder == "data/weights" else _CONSTANT
    for fqn, meta in entries.items():
        if not _NAME.match(fqn) or not isinstance(meta, dict):
            raise UnsafeArchiveError(source, member, f"entry {fqn!r} is not a tensor name")
        path_name = meta.get("path_name")
        target = f"{folder}/{path_name}"
        if not isinstance(path_name, str) or not payload.match(target):
            raise UnsafeArchiveError(
                source, member, f"entry {fqn!r}: path_name {path_name!r} is not a tensor payload"
            )
        if meta.get("use_pickle"):
            raise UnsafeArchiveError(
                source,
                f"{root}/{target}",
                f"tensor {fqn!r} is stored as a pickle (torch pickles tensor subclasses and "
                "unpickles them in full); mlbridge accepts plain tensors only",
            )
        if target not in contents:
            raise UnsafeArchiveError(source, member, f"entry {fqn!r}: {target} is missing")


def _resaved_sample_inputs(raw: bytes, source: str, member: str) -> bytes:
    """The sample inputs unpickled with ``weights_only=True`` and saved again by torch."""
    import torch

    try:
        inputs = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure of the safe unpickler is a refusal
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        lines = text.strip().splitlines()
        detail = f"it names {found.group(1)}" if found else (lines[0] if lines else "")
        raise UnsafeArchiveError(
            source,
            member,
            "holds pickled Python objects beyond tensors; mlbridge unpickles it with "
            f"weights_only=True only ({type(exc).__name__}: {detail})",
        ) from None
    buffer = io.BytesIO()
    torch.save(inputs, buffer)
    return buffer.getvalue()


# -- the program JSON -----------------------------------------------------------------------------


def check_program_json(program: Any, source: str, member: str) -> None:
    """Check the strings of a serialized program that torch would evaluate or compile.

    Raises
    ------
    UnsafeArchiveError
        Naming the member, the key path and the value.
    """
    for path, key, value in _strings(program, ()):
        where = ".".join(path)
        if key == "expr_str":
            problem = sympy_expression_problem(value)
        elif key in ("target", "as_operator"):
            problem = target_problem(value)
        elif key == "guards_code":
            problem = guard_problem(value)
        elif key == "metadata":
            problem = "a control character in free text" if _CONTROL.search(value) else ""
        elif key in _FREE_TEXT_KEYS or value in _FLOAT_WORDS:
            problem = ""
        else:
            problem = "" if value == "" or _NAME.match(value) else "not a (dotted) identifier"
        if problem:
            raise UnsafeArchiveError(source, member, f"{where} = {value!r}: {problem}")


def target_problem(target: str) -> str:
    """Why a node target is not an operator or symbolic arithmetic (empty when it is one)."""
    if target in _SYMBOLIC_TARGETS:
        return ""
    if not _OPERATOR_TARGET.match(target) or "__" in target:
        return "not an operator (torch.ops.*) nor symbolic arithmetic"
    parts = target.split(".")
    if parts[2] == "higher_order" and parts[3] not in _HIGHER_ORDER:
        return f"higher-order operator {parts[3]!r} is not one of {sorted(_HIGHER_ORDER)}"
    return ""


def _strings(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str, str]]:
    """``(key path, key, string)`` for every string and dict key; every string of a ``metadata``
    table (stack traces, module paths: stored, never evaluated) has the key ``metadata``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                continue
            if key == "metadata":
                for where, text in _free_text(value, (*path, key)):
                    yield where, "metadata", text
                continue
            here = (*path, key)
            parent = path[-1] if path else ""
            if key != "" and not _NAME.match(key) and parent not in _FREE_TEXT_KEYS:
                yield here, "<key>", key
            yield from _strings(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, (*path[:-1], f"{path[-1]}[{index}]") if path else ())
    elif isinstance(node, str) and path:
        yield path, path[-1].split("[", 1)[0], node


def _free_text(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, str(key)), str(key)
            yield from _free_text(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _free_text(value, (*path, str(index)))
    elif isinstance(node, str):
        yield path, node


def sympy_expression_problem(text: str) -> str:
    """Why ``text`` is not a safe sympy expression (empty when it is one).

    Safe: sympy constructors and torch's shape functions called on symbols, numbers and short
    literal strings; no attribute access, indexing, lambda or other name.
    """
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError) as exc:
        return f"not an expression ({exc})"
    for tok in tokens:
        kind, value = tok.type, tok.string
        if kind in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.NUMBER):
            continue
        if kind == tokenize.NAME:
            if not (
                value in _SYMPY_NAMES
                or value in _SYMPY_KEYWORDS
                or _SYMBOL.match(value)
                or _OPAQUE_FUNCTION.match(value)
            ):
                return f"name {value!r} is not a sympy function or a shape symbol"
        elif kind == tokenize.STRING:
            if not _SYMPY_STRING.match(value):
                return f"string {value} is not a symbol name or a number"
        elif kind == tokenize.OP:
            if value not in _SYMPY_OPS:
                return f"operator {value!r} is not arithmetic"
        else:
            return f"token {value!r} is not part of a sympy expression"
    return ""


def guard_problem(text: str) -> str:
    """Why ``text`` is not a safe guard (empty when it is one).

    Safe: comparisons and arithmetic of numbers and input sizes (``L['x'].size()[2] >= 3``),
    with ``max``/``min``/``abs`` and ``math`` functions.
    """
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        return f"not an expression ({exc.msg})"
    for node in ast.walk(tree):
        if not isinstance(node, _GUARD_NODES):
            return f"{type(node).__name__} is not allowed in a guard"
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float | str):
            return f"constant {node.value!r} is not a number"
        if isinstance(node, ast.Call):
            if node.keywords or not _guard_callee_ok(node.func):
                return f"call {ast.unparse(node.func)!r} is not a size or math function"
        elif isinstance(node, ast.Attribute):
            if not (_guard_callee_ok(node) or _guard_value_ok(node)):
                return f"attribute {ast.unparse(node)!r} is not a size or math value"
        elif isinstance(node, ast.Name):
            if node.id not in {"L", "math", "inf", *_GUARD_FUNCTIONS}:
                return f"name {node.id!r} is not an input, a number or a math function"
        elif isinstance(node, ast.Subscript):
            index = node.slice
            if not isinstance(index, ast.Constant) or not (
                isinstance(index.value, int)
                or (isinstance(index.value, str) and index.value.isidentifier())
            ):
                return f"index {ast.unparse(index)!r} is not an input name or a position"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if not node.value.isidentifier():
                return f"string {node.value!r} is not an input name"
    return ""


def _guard_callee_ok(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in _GUARD_FUNCTIONS
    if isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name) and func.value.id == "math":
            return func.attr in _GUARD_MATH
        return func.attr in _GUARD_TENSOR_METHODS and _is_input(func.value)
    return False


def _guard_value_ok(node: ast.Attribute) -> bool:
    if isinstance(node.value, ast.Name) and node.value.id == "math":
        return node.attr in _GUARD_MATH_VALUES
    return node.attr in _GUARD_TENSOR_ATTRS and _is_input(node.value)


def _is_input(node: ast.expr) -> bool:
    """``L['x']``, ``L['x'][0]``, ``L['flat_args'][1]``: an input of the program."""
    while isinstance(node, ast.Subscript):
        node = node.value
    return isinstance(node, ast.Name) and node.id == "L"


# -- the loaded graph -----------------------------------------------------------------------------


def _allowed_callables() -> set[Any]:
    import torch

    names = ("getitem", "eq", "ne", "le", "ge", "lt", "gt", "neg", "pos", "mul", "add", "sub")
    names += ("floordiv", "mod", "pow", "truediv", "and_", "or_", "lshift", "rshift")
    allowed: set[Any] = {getattr(operator, n) for n in names} | {math.trunc}
    for n in ("not", "int", "float", "ite", "max", "min", "sqrt"):
        fn = getattr(torch, f"sym_{n}", None)
        if fn is not None:
            allowed.add(fn)
    return allowed


def check_graph(program: torch.export.ExportedProgram, source: str) -> None:
    """Every node of the loaded program (and of its subgraphs) calls an operator.

    Raises
    ------
    UnsafeArchiveError
        Naming the node and its target.
    """
    import torch

    allowed = _allowed_callables()
    hops = _HIGHER_ORDER
    for module_name, module in program.graph_module.named_modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            target = node.target
            if node.op == "call_function" and (
                isinstance(target, torch._ops.OpOverload)
                or (isinstance(target, torch._ops.HigherOrderOperator) and target.name() in hops)
                or target in allowed
            ):
                continue
            where = f"{module_name}.{node.name}" if module_name else node.name
            raise UnsafeArchiveError(
                source,
                "",
                f"node {where!r} ({node.op}) calls {target!r}, not an operator; mlbridge runs "
                "programs of torch operators only",
            )
