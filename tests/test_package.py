"""The package's layout rules: each module of nst/ imports only the modules listed above it in
nst/__init__.py, none imports the course files, and importing the course files or the package
imports nothing heavy."""
import ast
import os
import re
import subprocess
import sys

import pytest

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(PROJECT_DIR, 'nst')


def listed_order():
    """The module names in the order nst/__init__.py's docstring lists them."""
    with open(os.path.join(PACKAGE_DIR, '__init__.py')) as f:
        doc = ast.get_docstring(ast.parse(f.read()))
    return re.findall(r'^    (\w+)\s{2,}', doc, re.M)


def imported_modules(name):
    """The modules a module of nst/ imports, wherever in the file (inside functions too)."""
    with open(os.path.join(PACKAGE_DIR, name + '.py')) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == 'nst':
                found.update('nst.' + alias.name for alias in node.names)
            else:
                found.add(node.module)
    return found


def test_every_module_is_listed_once():
    files = sorted(name[:-3] for name in os.listdir(PACKAGE_DIR)
                   if name.endswith('.py') and name != '__init__.py')
    order = listed_order()
    assert len(order) == len(set(order))
    assert sorted(order) == files


@pytest.mark.parametrize('name', listed_order())
def test_module_imports_downward_only_and_never_the_course_files(name):
    order = listed_order()
    imports = imported_modules(name)
    assert not imports & {'nst_utils', 'art_generation'}
    upward = [module for module in imports if module.startswith('nst.')
              and module.split('.')[1] in order
              and order.index(module.split('.')[1]) >= order.index(name)]
    assert upward == []


def test_importing_the_course_files_imports_nothing_heavy():
    code = ('import sys, nst_utils, art_generation, nst.cli, nst.tuning, nst.optimize, '
            'nst.checkpoint, nst.tiles; '
            'print(sorted(m for m in ("tensorflow", "scipy", "matplotlib", "PIL", "torch") '
            'if m in sys.modules))')
    output = subprocess.run([sys.executable, '-c', code], cwd=PROJECT_DIR, capture_output=True,
                            text=True, check=True).stdout
    assert output.strip() == '[]'
