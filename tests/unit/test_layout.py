"""The package's shape: every module importable as a module, the public functions lazily."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import types

import modelship


def test_every_module_imports_as_a_module():
    names = [m.name for m in pkgutil.walk_packages(modelship.__path__, "modelship.")]
    assert {"modelship._fetch", "modelship._resolve", "modelship.image._push", "modelship.oci.registry"} <= set(names)
    for name in names:
        assert isinstance(importlib.import_module(name), types.ModuleType), name
    # the public names stay the functions, also after their modules were imported
    for name in ("fetch", "lock", "resolve", "publish", "build", "push", "inspect"):
        assert isinstance(getattr(modelship, name), types.FunctionType), name
    assert set(modelship.__all__) <= set(dir(modelship))


def test_import_modelship_loads_no_store_or_build_machinery():
    code = "import json, sys, modelship; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    heavy = [m for m in loaded if m.startswith(("docker", "azure", "boto", "modelship.image", "modelship._"))]
    assert "modelship.manifest" in loaded and not heavy, heavy


def test_store_table_declares_each_scheme_once_and_imports_a_store_on_first_use(tmp_path):
    code = (
        "import json, sys\n"
        "from modelship import stores\n"
        "schemes = sorted(stores.registry.factories())\n"
        "before = [m for m in sys.modules if m.startswith(('modelship.stores.', 'azure', 'boto'))]\n"
        f"source = stores.open_source({str(tmp_path)!r})\n"
        "print(json.dumps([schemes, before, type(source).__name__]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    schemes, before, opened = json.loads(out)
    assert schemes == ["az", "file", "http", "https", "oci", "s3"]
    assert before == ["modelship.stores.base"] and opened == "LocalSource"
