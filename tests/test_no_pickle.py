"""No pickle path in the app: what crosses the network is ArrayRecords, what lands on disk is safetensors or JSON.

The scan reads the syntax tree of every Python file of the app and its scripts, so comments and
docstrings that mention pickle do not count, and catching `pickle.UnpicklingError` (what
`torch.load(weights_only=True)` raises on a file that is not plain tensors) is allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [ROOT / "warmfed_flwr", ROOT / "scripts", ROOT / "server_app.py", ROOT / "client_app.py"]
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
EXCEPTIONS = {"PickleError", "PicklingError", "UnpicklingError"}
LOADERS = {"torch.load", "np.load", "numpy.load"}


def _dotted(node: ast.AST) -> str:
    """`a.b.c` for a name or an attribute chain, '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        prefix = _dotted(node.value)
        return f"{prefix}.{node.attr}" if prefix else ""
    return ""


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def pickle_paths(source: str, name: str) -> list[str]:
    """Each place in `source` that can pickle or unpickle, as 'name:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = node.module.split(".")[0]
            for alias in node.names:
                if (module in PICKLE_MODULES and alias.name not in EXCEPTIONS) or f"{module}.{alias.name}" in LOADERS:
                    found.append(f"{name}:{node.lineno}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Attribute) and _dotted(node.value) in PICKLE_MODULES and node.attr not in EXCEPTIONS:
            found.append(f"{name}:{node.lineno}: {_dotted(node)}")
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if func == "torch.load" and not _is_true(keywords.get("weights_only")):
                found.append(f"{name}:{node.lineno}: torch.load without weights_only=True")
            elif func in ("np.load", "numpy.load") and "allow_pickle" in keywords:
                found.append(f"{name}:{node.lineno}: {func} with allow_pickle")
            elif func == "torch.save" or func.endswith((".read_pickle", ".to_pickle")):
                found.append(f"{name}:{node.lineno}: {func}")
    return sorted(found)


def test_the_scan_finds_every_kind_of_pickle_path():
    bad = (
        "import pickle, dill\nimport torch, numpy as np\n"
        "from joblib import load\n"                            # 3
        "pickle.loads(b'')\n"                                  # 4
        "dill.dump(0, None)\n"                                 # 5
        "torch.load('m.pt')\n"                                 # 6
        "torch.load('m.pt', weights_only=False)\n"             # 7
        "np.load('a.npy', allow_pickle=True)\n"                # 8
        "torch.save({}, 'm.pt')\n"                             # 9
        "frame.to_pickle('f.pkl')\n"                           # 10
        "from torch import load\n"                             # 11
    )
    assert sorted(int(hit.split(":")[1]) for hit in pickle_paths(bad, "bad.py")) == list(range(3, 12))
    harmless = (
        "import pickle, torch, numpy as np\n"
        "'''never pickles'''\n"
        "try:\n    torch.load('m.pth', map_location='cpu', weights_only=True)\n"
        "except pickle.UnpicklingError:\n    pass\n"
        "np.load('a.npy')\n"
    )
    assert pickle_paths(harmless, "harmless.py") == []


def test_the_app_has_no_pickle_path():
    files = [p for entry in SCANNED for p in ([entry] if entry.is_file() else sorted(entry.rglob("*.py")))]
    assert len(files) > 20
    found = [hit for path in files for hit in pickle_paths(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == []
