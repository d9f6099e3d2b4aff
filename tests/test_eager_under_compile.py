"""``eager_under_compile``: host-state code runs eagerly inside compiled graphs, and importing it (brSF)
does not import ``torch._dynamo``, whichever of the two is imported first."""

import subprocess
import sys
import textwrap

import pytest

ENV = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}

COMPILE_BRSF = """
class Counting:
    def __init__(self):
        self.graphs = 0

    def __call__(self, graph, example_inputs):
        self.graphs += 1
        return graph.forward


backend = Counting()
net = torch.nn.Sequential(nni_bio.get_rule("brsf").conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                          torch.nn.Flatten(), nni_bio.get_rule("brsf").linear(4 * 6 * 6, 3))
compiled = torch.compile(net, backend=backend)
x = torch.randn(2, 1, 6, 6)
counts = []
for steps in (3, 9):
    for _ in range(steps):
        compiled(x).square().sum().backward()
    counts.append(backend.graphs)
print("GRAPHS", counts, "STEP", net[0].feedback.step)
"""


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_a_brsf_network_trains_without_importing_dynamo():
    out = _run("""
        import sys, torch, nni_bio
        layer = nni_bio.get_rule("brsf").conv2d(2, 2, 3)
        for _ in range(2):
            layer(torch.randn(1, 2, 5, 5, requires_grad=True)).sum().backward()
        print("DYNAMO", "torch._dynamo" in sys.modules, "STEP", layer.feedback.step)
    """)
    assert "DYNAMO False STEP 2" in out


@pytest.mark.parametrize("dynamo_first", [False, True])
def test_compiled_brsf_counts_its_steps_without_a_graph_per_step(dynamo_first):
    first = "import torch._dynamo\n" if dynamo_first else ""
    out = _run(first + "import sys, torch, nni_bio\nimport nni_bio.rules.brsf\n"
               "assert ('torch._dynamo' in sys.modules) == " + str(dynamo_first) + "\n" + COMPILE_BRSF)
    line = next(line for line in out.splitlines() if line.startswith("GRAPHS"))
    counts = eval(line.split("GRAPHS ")[1].split(" STEP")[0])  # noqa: S307 (our own printout)
    assert counts[0] == counts[1], counts  # no new graph after the first steps
    assert line.endswith("STEP 12")  # every compiled forward counted its step, eagerly


def test_the_eager_function_is_called_directly_outside_compile():
    from nni_bio.core.eager_under_compile import eager_under_compile

    calls = []

    def bump(x):
        """Docstring kept."""
        calls.append(x)
        return x + 1

    wrapped = eager_under_compile(bump)
    assert wrapped(1) == 2 and calls == [1]
    assert wrapped.__name__ == "bump" and wrapped.__doc__ == "Docstring kept." and not hasattr(wrapped, "__wrapped__")
