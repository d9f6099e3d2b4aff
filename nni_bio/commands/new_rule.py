"""``nni-bio new-rule NAME``: write a ready plugin distribution for a new learning rule.

    nni-bio new-rule mysign --family feedback --dir ~/src
    pip install -e ~/src/nni-bio-mysign        # now `nni-bio rules` lists it and every search space offers it
    pytest ~/src/nni-bio-mysign                # the conformance kit (nni_bio.testing.check_rule) on the rule

The distribution holds a ``pyproject.toml`` whose ``nni_bio.rules`` entry point names the rule, the rule in
``src/<package>/rule.py`` (from a template that passes the conformance kit as written), a test that runs the kit
and one training step, and a README. ``--family feedback`` starts from a rule that sends the error down through
its own fixed feedback tensor (the weight gradient stays exact); ``--family local`` from a rule whose weight
update is local (Oja's Hebbian rule) and ignores the error, which still goes down exactly.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from string import Template

from nni_bio.core.errors import NniBioError

NAME = re.compile(r"^[a-z][a-z0-9_]*$")

PYPROJECT = Template('''\
[build-system]
requires = ["setuptools>=68", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "nni-bio-$dist"
version = "0.1.0"
description = "The $name learning rule for nni-bio"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["nni-bio>=0.1,<1"]

[project.optional-dependencies]
test = ["pytest"]

# The line that makes the rule visible to nni-bio: `nni-bio rules` lists it, get_rule("$name") loads it,
# and every search space offers it.
[project.entry-points."nni_bio.rules"]
$name = "$package.rule:$cls"

[tool.setuptools.packages.find]
where = ["src"]
''')

FEEDBACK_RULE = Template('''\
"""The ``$name`` learning rule: the error is sent down through a fixed feedback tensor of the weight's shape.

Edit :meth:`${cls}Feedback.feedback_weight` (what replaces W in the backward pass) and the state built in
``__init__``. The weight and bias gradients stay the exact local ones; nni_bio.testing.check_rule checks it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nni_bio import PLUGIN_API_VERSION, Feedback, LearningRule, RuleInfo, RuleLayer, xavier_like

__all__ = ["$cls", "${cls}Feedback"]


class ${cls}Feedback(Feedback):
    """Buffer ``matrix``: drawn once, from the layer's own generator, never from the global one."""

    def __init__(self, weight: Tensor, generator: torch.Generator):
        super().__init__()
        self.register_buffer("matrix", xavier_like(weight, generator))  # a buffer, never a Parameter

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        return self.matrix  # used in W's place for the error sent down


class $cls(LearningRule):
    """The ``$name`` rule.

    Example:
        >>> import torch
        >>> $cls().linear(4, 3)(torch.randn(2, 4)).shape
        torch.Size([2, 3])
    """

    info = RuleInfo(name="$name", family="feedback", summary="$name: error sent down through a fixed feedback tensor",
                    api_version=PLUGIN_API_VERSION)

    def feedback(self, layer: RuleLayer) -> Feedback:
        return ${cls}Feedback(layer.weight.detach(), layer.rule_generator())
''')

LOCAL_RULE = Template('''\
"""The ``$name`` learning rule: a local (Hebbian) weight update, Oja's rule, delivered as a pseudo-gradient.

For every sample n (a row of a linear input, or an output position of a convolution with its input patch x_n):
u_n = W x_n and dW = (U^T X - diag(sum_n u_nk^2) W) / N; the backward returns grad_W = -dW, so the optimizer
applies W <- W + lr * dW. The error arriving at the layer is not used for the weight, and is sent down exactly
(W^T delta), so the layers below keep learning. Edit :func:`local_update`.
"""

from __future__ import annotations

from torch import Tensor

from nni_bio import PLUGIN_API_VERSION, Feedback, LayerOp, LearningRule, RuleInfo, RuleLayer

__all__ = ["$cls", "${cls}Feedback", "local_update"]


def local_update(op: LayerOp, x: Tensor, weight: Tensor) -> Tensor:
    """Oja's update dW (weight's shape), averaged over the samples."""
    u = op.forward(x, weight, None)
    unit = u.dim() - 1 if op.kind == "linear" else u.dim() - 3
    _, ux, _ = op.grads(u, x, weight, (False, True, False))  # sum_n u_n x_n^T, at the layer's geometry
    uu = (u * u).sum(dim=[d for d in range(u.dim()) if d != unit])
    n = u.numel() // u.shape[unit]
    return (ux - uu.view((-1,) + (1,) * (weight.dim() - 1)) * weight) / n


class ${cls}Feedback(Feedback):
    """No state: the error goes down through W itself; the weight gets the local update."""

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        return weight.detach()

    def backward(self, op: LayerOp, grad_out: Tensor, x: Tensor, feedback: Tensor, output: Tensor | None,
                 needs: tuple[bool, bool, bool]):
        gx, _, gb = op.grads(grad_out, x, feedback, (needs[0], False, needs[2]))
        gw = local_update(op, x.float(), feedback.float()).neg_().to(grad_out.dtype) if needs[1] else None
        return gx, gw, gb


class $cls(LearningRule):
    """The ``$name`` rule.

    Example:
        >>> import torch
        >>> $cls().linear(4, 3)(torch.randn(2, 4)).shape
        torch.Size([2, 3])
    """

    info = RuleInfo(name="$name", family="local", summary="$name: Oja's local Hebbian update, error sent down exactly",
                    api_version=PLUGIN_API_VERSION)

    def feedback(self, layer: RuleLayer) -> Feedback:
        return ${cls}Feedback()
''')

TEST = Template('''\
"""The conformance kit on the ``$name`` rule, through its entry point (run after `pip install -e .`)."""

import torch

import nni_bio
from nni_bio.testing import check_rule


def test_the_rule_is_found_through_its_entry_point():
    assert "$name" in nni_bio.list_rules()


def test_the_rule_passes_the_conformance_kit():
    check_rule("$name")


def test_a_network_with_the_rule_trains_one_step():
    torch.manual_seed(0)
    rule = nni_bio.get_rule("$name")
    net = torch.nn.Sequential(rule.conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              rule.linear(4 * 8 * 8, 10))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    loss = torch.nn.functional.cross_entropy(net(torch.randn(8, 1, 8, 8)), torch.randint(0, 10, (8,)))
    loss.backward()
    before = [p.detach().clone() for p in net.parameters()]
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(net.parameters(), before))
''')

README = Template('''\
# nni-bio-$dist

The `$name` learning rule for [nni-bio](https://github.com/) ($family family), written by `nni-bio new-rule`.

```bash
pip install -e .            # nni-bio finds the rule through the `nni_bio.rules` entry point
nni-bio rules               # lists $name
pytest                      # the conformance kit (nni_bio.testing.check_rule) and one training step
nni-bio export-space tiny --rules $name,fa    # search spaces offer it like a built-in rule
```

The rule is in `src/$package/rule.py`; its entry point in `pyproject.toml`.
''')


def class_name(name: str) -> str:
    """``my_sign`` -> ``MySignRule``."""
    return "".join(part.capitalize() for part in name.split("_") if part) + "Rule"


def write_plugin(name: str, family: str = "feedback", directory: str | Path = ".") -> Path:
    """Write the plugin distribution ``nni-bio-<name>`` under ``directory``; return its folder.

    Example:
        >>> import tempfile
        >>> folder = write_plugin("mysign", "feedback", tempfile.mkdtemp())
        >>> sorted(p.name for p in folder.iterdir())
        ['README.md', 'pyproject.toml', 'src', 'tests']
    """
    if not NAME.match(name):
        raise NniBioError(f"rule name {name!r}: use lower-case letters, digits and '_', starting with a letter "
                          "(it becomes a LayerChoice key and a module name), e.g. 'my_sign'")
    if family not in ("feedback", "local"):
        raise NniBioError(f"--family {family!r}: choose 'feedback' (error sent down through another tensor) or "
                          "'local' (a local weight update)")
    from nni_bio.core._registry import is_rule

    if is_rule(name):
        raise NniBioError(f"a rule named {name!r} is already installed (`nni-bio rules`): choose another name")
    dist = name.replace("_", "-")
    folder = Path(directory).expanduser() / f"nni-bio-{dist}"
    if folder.exists():
        raise NniBioError(f"{folder} already exists: nothing was written (choose another --dir or name)")
    values = {"name": name, "dist": dist, "package": f"nni_bio_{name}", "cls": class_name(name), "family": family}
    files = {
        "pyproject.toml": PYPROJECT, "README.md": README, f"tests/test_{name}.py": TEST,
        f"src/{values['package']}/rule.py": FEEDBACK_RULE if family == "feedback" else LOCAL_RULE,
    }
    for relative, template in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.substitute(values))
    (folder / "src" / values["package"] / "__init__.py").write_text(
        f'"""The {name} learning rule for nni-bio."""\n\nfrom {values["package"]}.rule import {values["cls"]}\n\n'
        f'__all__ = ["{values["cls"]}"]\n')
    return folder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("new-rule", help="write a plugin distribution for a new learning rule",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the rule's name (lower case, digits, '_'), e.g. my_sign")
    parser.add_argument("--family", choices=["feedback", "local"], default="feedback",
                        help="feedback: the error goes down through another tensor; local: a local weight update")
    parser.add_argument("--dir", default=".", help="where to create nni-bio-<name>/ (default: here)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    folder = write_plugin(args.name, args.family, args.dir)
    print(f"wrote {folder}\nnext:\n  pip install -e {folder}\n  nni-bio rules            # lists {args.name}\n"
          f"  pytest {folder}")
    return 0
