"""Start-up: `import autotinybert`, the config modules and the CLI import neither torch nor transformers (so
``autotinybert --help`` answers at once), while the public names and transformers' Auto classes work as before.

Each check runs in a fresh interpreter: what one test imports would otherwise hide what another needs."""

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "matplotlib", "sklearn", "scipy")
PACKAGES = ("autotinybert", "autotinybert.data", "autotinybert.demo", "autotinybert.downstream",
            "autotinybert.latency", "autotinybert.search", "autotinybert.train")


def python(code: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def imported_packages(importtime_stderr: str) -> set[str]:
    """Top-level packages named in ``-X importtime`` lines (``import time: self | cumulative | a.b.c``)."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                names.add(name.split(".")[0])
    return names


def test_cli_imports_no_heavy_package():
    """`autotinybert --help` answers at once: no command module imports torch & co. before parsing arguments."""
    heavy = imported_packages(python("import autotinybert.cli").stderr) & set(HEAVY)
    assert not heavy, f"import autotinybert.cli imports {sorted(heavy)}"


def test_core_modules_import_no_heavy_package():
    """The package and the modules that configs and the CLI read: each one alone, in a fresh interpreter."""
    modules = ["autotinybert", "autotinybert.space", "autotinybert.arch", "autotinybert.errors",
               "autotinybert.io", "autotinybert.downstream.tasks", "autotinybert.search.ranking",
               "autotinybert.search.records", "autotinybert.demo", "autotinybert.latency.device"]
    code = f"""
        import importlib, json, sys
        found = {{}}
        for name in {modules!r}:
            importlib.import_module(name)
            found[name] = sorted(m for m in {HEAVY!r} if m in sys.modules)
        print(json.dumps(found))
    """
    found = json.loads(python(code).stdout)
    assert found == {name: [] for name in modules}
    # the demo task registers itself on `import autotinybert.demo`, without torch
    python("import autotinybert.demo; from autotinybert.downstream.tasks import get_task; get_task('docpair')")


@pytest.mark.parametrize("package", PACKAGES)
def test_public_names_resolve(package):
    """Every name in ``__all__`` loads on first access and is listed by ``dir()``."""
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
        assert name in dir(module), name
    with pytest.raises(AttributeError):
        module.no_such_name


def test_function_stays_after_its_submodule_is_imported():
    """``autotinybert.extract`` is the function even when autotinybert/extract.py was first imported as a module,
    which binds the module to the package's attribute of that name."""
    python("""
        import sys, autotinybert
        from autotinybert.extract import to_plain_bert  # loads the submodule autotinybert.extract
        assert autotinybert.extract is sys.modules["autotinybert.extract"].extract
        from autotinybert import extract
        assert callable(extract) and extract.__module__ == "autotinybert.extract"
        assert autotinybert.supernet.SuperBertForMaskedLM is autotinybert.SuperBertForMaskedLM  # submodules too
    """)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from autotinybert import AutoTinyBertConfig, AutoTinyBertForMaskedLM

    out = tmp_path_factory.mktemp("auto") / "model"
    config = AutoTinyBertConfig.from_arch("2-32-64-4-16", vocab_size=97, max_position_embeddings=16)
    AutoTinyBertForMaskedLM(config).save_pretrained(out)
    return out


CHECK_AUTO = """
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    config = AutoConfig.from_pretrained({folder!r})
    assert type(config).__name__ == "AutoTinyBertConfig" and str(config.arch) == "2-32-64-4-16", config
    assert type(AutoModelForMaskedLM.from_pretrained({folder!r})).__name__ == "AutoTinyBertForMaskedLM"
    assert type(AutoModel.from_pretrained({folder!r})).__name__ == "AutoTinyBertModel"
    assert "autotinybert-supernet" in CONFIG_MAPPING
"""


@pytest.mark.parametrize("first", ["autotinybert", "transformers", "from transformers import AutoConfig"])
def test_auto_classes_resolve_in_either_import_order(model_dir, first):
    """``import autotinybert`` registers the model types with transformers' Auto classes: at once when
    transformers is already imported, else as soon as it is."""
    before = {"autotinybert": "import autotinybert\n"
                              "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n",
              "transformers": "import transformers\nimport autotinybert\n",
              "from transformers import AutoConfig": "from transformers import AutoConfig\nimport autotinybert\n"}
    python("import sys\n" + before[first] + textwrap.dedent(CHECK_AUTO.format(folder=str(model_dir))))
