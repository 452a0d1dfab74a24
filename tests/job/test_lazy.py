"""lazy.py: a stand-in module imports the real one on its first use, and answers as the real one does.

Each case runs in a child Python (sys.modules is the thing under test) with a package made here
that counts its imports.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.job.test_jupyterboot import child


@pytest.fixture
def slowpkg(tmp_path: Path) -> Path:
    """A package that records being imported, with a function, a constant and a version."""
    pkg = tmp_path / "slowpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import sys\nsys.slowpkg_imports = getattr(sys, 'slowpkg_imports', 0) + 1\n"
        "__version__ = '1.2'\nRULES = ('iri',)\n"
        "def is_valid_syntax(rule, text):\n    return rule in RULES and ' ' not in text\n"
    )
    return tmp_path


def test_from_import_then_a_call_imports_it_once(slowpkg: Path) -> None:
    got = child(
        sys.executable,
        """
        from lazy import install
        assert install({"slowpkg": ("is_valid_syntax",)}) == ["slowpkg"]
        from slowpkg import is_valid_syntax  # jsonschema's way
        import slowpkg
        before = getattr(sys, "slowpkg_imports", 0)
        answers = [is_valid_syntax("iri", "a:b"), is_valid_syntax("iri", "a b"), is_valid_syntax("uri", "a:b")]
        after_call = sys.slowpkg_imports
        rules, version = slowpkg.RULES, slowpkg.__version__  # other attributes, dunders too, pass through
        print(json.dumps({"before": before, "answers": answers, "after": after_call, "rules": list(rules),
                          "version": version, "real": sys.modules["slowpkg"] is not slowpkg,
                          "total": sys.slowpkg_imports}))
        """,
        slowpkg,
    )
    assert got == {
        "before": 0,
        "answers": [True, False, False],
        "after": 1,
        "rules": ["iri"],
        "version": "1.2",
        "real": True,
        "total": 1,
    }


def test_import_whole_then_an_attribute_imports_it(slowpkg: Path) -> None:
    """paramiko's way with invoke: `import m` (twice: the import system looks at __spec__), later `m.f`."""
    got = child(
        sys.executable,
        """
        from lazy import install
        install({"slowpkg": ()})
        import slowpkg
        import slowpkg as again
        before = getattr(sys, "slowpkg_imports", 0)
        answer = slowpkg.is_valid_syntax("iri", "x")
        print(json.dumps({"before": before, "answer": answer, "after": sys.slowpkg_imports}))
        """,
        slowpkg,
    )
    assert got == {"before": 0, "answer": True, "after": 1}


def test_a_missing_module_stays_missing_and_the_opt_out_imports_at_once(slowpkg: Path) -> None:
    missing = child(
        sys.executable,
        """
        from lazy import install
        done = install({"no_such_module_hpcjup": ("f",)})
        try:
            from no_such_module_hpcjup import f
            found = True
        except ImportError:
            found = False
        print(json.dumps({"done": done, "found": found}))
        """,
    )
    assert missing == {"done": [], "found": False}
    opted_out = child(
        sys.executable,
        """
        from lazy import install
        done = install({"slowpkg": ("is_valid_syntax",)})
        from slowpkg import is_valid_syntax
        print(json.dumps({"done": done, "imports": sys.slowpkg_imports}))
        """,
        slowpkg,
        HPCJUP_LAZY_IMPORTS="0",
    )
    assert opted_out == {"done": [], "imports": 1}


def test_a_module_already_imported_is_left_alone(slowpkg: Path) -> None:
    got = child(
        sys.executable,
        """
        import slowpkg
        from lazy import install
        print(json.dumps({"done": install({"slowpkg": ()}), "same": sys.modules["slowpkg"] is slowpkg}))
        """,
        slowpkg,
    )
    assert got == {"done": [], "same": True}


def test_a_module_whose_requirement_is_missing_is_left_to_fail_at_import(slowpkg: Path) -> None:
    """rfc3987_syntax without lark fails at import, where jsonschema's suppress(ImportError) expects it."""
    got = child(
        sys.executable,
        """
        from lazy import install
        print(json.dumps({"done": install({"slowpkg": ()}, {"slowpkg": ("no_such_dep_hpcjup",)}),
                          "with": install({"slowpkg": ()}, {"slowpkg": ("json",)})}))
        """,
        slowpkg,
    )
    assert got == {"done": [], "with": ["slowpkg"]}


def test_a_forwarded_function_pickles_as_the_real_one(slowpkg: Path) -> None:
    got = child(
        sys.executable,
        """
        import pickle
        from lazy import install
        install({"slowpkg": ("is_valid_syntax",)})
        from slowpkg import is_valid_syntax
        again = pickle.loads(pickle.dumps(is_valid_syntax))
        print(json.dumps({"module": is_valid_syntax.__module__, "answer": again("iri", "a:b")}))
        """,
        slowpkg,
    )
    assert got == {"module": "slowpkg", "answer": True}
