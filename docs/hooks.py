"""mkdocs hooks of the documentation site.

- The committed study reports (``results/``) become part of the site, so the Results page links to them.
- nni-bio's docstrings say ``Example:`` (one runnable example) and use Sphinx roles (``:class:`~a.B```); griffe's
  Google parser reads only ``Examples:`` as code and Markdown has no roles, so the site reads them as
  ``Examples:`` and plain code spans (:class:`DocstringMarkup`).
"""

from __future__ import annotations

import re
from pathlib import Path

import griffe
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent


def on_files(files, config):
    for path in sorted((ROOT / "results").rglob("*")):
        if path.is_file():
            files.append(File(str(path.relative_to(ROOT)), str(ROOT), config["site_dir"],
                              config["use_directory_urls"]))
    return files


ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([\w.]+)`")


def _role(match: re.Match) -> str:
    name = match.group(2)
    return f"`{name.rsplit('.', 1)[-1] if match.group(1) else name}`"


class DocstringMarkup(griffe.Extension):
    """``Example:`` -> ``Examples:``, ``:class:`~a.B``` -> ```B```, in every docstring before it is parsed."""

    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            text = re.sub(r"^(\s*)Example:\s*$", r"\1Examples:", obj.docstring.value, flags=re.M)
            obj.docstring.value = ROLE.sub(_role, text)
