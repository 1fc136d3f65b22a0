"""What a command loads before it works: numpy only when something computes with arrays
(functional mode, IR evaluation, the simulator's work-item tables), not to read a model,
the op catalogues or a target, so a GEMM what-if does not pay for it."""
import subprocess
import sys

from isa.lazy_numpy import np


def _modules_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    return set(out.stdout.split())


def test_the_command_path_imports_without_numpy():
    loaded = _modules_after(
        "import compiler.cli.main, compiler.driver, runtime.interpreter\n"
        "from compiler.frontend import load_model\n"
        "from isa.target_loader import load_target\n"
        "load_target('h800')\n"
        "load_model('examples/gemm.ds')")
    assert "compiler.ir.ops" in loaded and "isa.vector_ops" in loaded   # the catalogues are read
    assert "numpy" not in loaded and "ml_dtypes" not in loaded


def test_the_lazy_module_is_numpy_once_used():
    import numpy
    assert np.float32 is numpy.float32
    assert np.add(np.ones(2), 1).tolist() == [2.0, 2.0]
    assert np.linalg.norm is numpy.linalg.norm
