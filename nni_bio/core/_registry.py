"""Where learning rules come from: the ``nni_bio.rules`` entry-point group, plus rules registered at
run time with :func:`register_rule` (notebooks, tests).

Listing reads entry-point metadata only; a rule's code is imported on first :func:`get_rule`.
nni-bio's built-in rules are entry points of the ``nni-bio`` distribution, found the same way as
third-party plugins. :func:`rule_report` loads every rule and reports failures instead of raising
(``nni-bio rules``).

Environment:
    NNI_BIO_DISABLE_PLUGIN_AUTOLOAD=1: ignore every distribution but nni-bio itself.
    NNI_BIO_BLOCK_PLUGINS=a,b: ignore the rules and distributions with these names.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from importlib import metadata

from nni_bio.core.errors import (IncompatiblePluginError, NniBioError, PluginLoadError, RuleCollisionError,
                            RuleTypeError, UnknownRuleError)
from nni_bio.core.rule import PLUGIN_API_VERSION, SUPPORTED_API_VERSIONS, LearningRule, RuleInfo

GROUP = "nni_bio.rules"
OWN_DISTRIBUTION = "nni-bio"
_RUNTIME = "(registered at run time)"


@dataclass(frozen=True)
class RuleSource:
    """Where a rule name comes from: a distribution's entry point, or run-time registration."""

    name: str
    distribution: str
    version: str
    value: str  # "module:attr" of the entry point, or the rule's class for run-time rules
    entry_point: metadata.EntryPoint | None = None


_sources: dict[str, list[RuleSource]] | None = None
_loaded: dict[str, LearningRule] = {}
_runtime: dict[str, LearningRule] = {}


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-")


def _discover() -> dict[str, list[RuleSource]]:
    global _sources
    if _sources is None:
        autoload = os.environ.get("NNI_BIO_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
        blocked = {b.strip() for b in os.environ.get("NNI_BIO_BLOCK_PLUGINS", "").split(",") if b.strip()}
        blocked_dists = {_normalise(b) for b in blocked}
        found: dict[str, dict[tuple[str, str], RuleSource]] = {}
        for ep in metadata.entry_points(group=GROUP):
            dist = ep.dist.name if ep.dist is not None else "(unknown distribution)"
            version = ep.dist.version if ep.dist is not None else "?"
            if ep.name in blocked or _normalise(dist) in blocked_dists:
                continue
            if not autoload and _normalise(dist) != OWN_DISTRIBUTION:
                continue
            # the same distribution can be visible twice on sys.path (e.g. an editable install): dedupe
            found.setdefault(ep.name, {})[(_normalise(dist), ep.value)] = RuleSource(ep.name, dist, version, ep.value, ep)
        _sources = {name: list(by_dist.values()) for name, by_dist in found.items()}
    return _sources


def reset_registry() -> None:
    """Forget discovered and loaded rules (run-time registrations too): rediscover on next use."""
    global _sources
    _sources = None
    _loaded.clear()
    _runtime.clear()


def _all_sources() -> dict[str, list[RuleSource]]:
    sources = {name: list(found) for name, found in _discover().items()}
    for name, rule in _runtime.items():
        sources.setdefault(name, []).append(RuleSource(name, _RUNTIME, "", type(rule).__qualname__))
    return sources


def _collision(name: str, found: list[RuleSource]) -> RuleCollisionError:
    who = " and by ".join(f"{s.distribution} {s.version} ({s.value})".replace("  ", " ") for s in found)
    return RuleCollisionError(
        f"learning rule {name!r} is provided by {who}. Uninstall one of them, or set "
        f"NNI_BIO_BLOCK_PLUGINS=<distribution> to ignore one."
    )


def rule_sources() -> dict[str, RuleSource]:
    """Name -> provider of every available rule, without importing any rule code."""
    out = {}
    for name, found in sorted(_all_sources().items()):
        if len(found) > 1:
            raise _collision(name, found)
        out[name] = found[0]
    return out


def list_rules(include: str | list[str] = "*", exclude: str | list[str] = ()) -> list[str]:
    """Sorted names of the available learning rules, filtered with fnmatch patterns.

    Listing imports no rule code. Two distributions offering one name raise
    :class:`~nni_bio.core.errors.RuleCollisionError`.

    Example:
        >>> import nni_bio
        >>> [r for r in nni_bio.list_rules() if r in ("backprop", "fa")]
        ['backprop', 'fa']
    """
    include = [include] if isinstance(include, str) else list(include)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    return [n for n in rule_sources()
            if any(fnmatch.fnmatchcase(n, p) for p in include) and not any(fnmatch.fnmatchcase(n, p) for p in exclude)]


def is_rule(name: str) -> bool:
    """Whether ``name`` is an available rule (no import)."""
    return name in _all_sources()


def get_rule(name: str | LearningRule) -> LearningRule:
    """The learning rule called ``name`` (importing its plugin on first use).

    Raises:
        UnknownRuleError: no such rule (the message suggests close names).
        RuleCollisionError: two distributions provide it.
        PluginLoadError: its entry point fails to import or is not a learning rule.
        IncompatiblePluginError: it targets an unsupported plugin API version, or declares none.
        RuleTypeError: ``name`` is neither a string nor a LearningRule instance (e.g. a rule class).
    """
    if isinstance(name, LearningRule):
        return name
    if not isinstance(name, str):
        raise RuleTypeError(_not_a_rule(name))
    if name in _loaded:
        return _loaded[name]
    sources = _all_sources()
    found = sources.get(name)
    if not found:
        raise UnknownRuleError(name, sources)
    if len(found) > 1:
        raise _collision(name, found)
    rule = _runtime[name] if found[0].entry_point is None else _load(found[0])
    _loaded[name] = rule
    return rule


def _not_a_rule(value: object) -> str:
    message = f"get_rule() takes a rule name (a str) or a LearningRule instance, not {value!r}"
    if isinstance(value, type) and issubclass(value, LearningRule):
        info = getattr(value, "info", None)
        by_name = f" or its name, get_rule({info.name!r})" if isinstance(info, RuleInfo) else ""
        return f"{message}: pass an instance, get_rule({value.__name__}()){by_name}"
    return message


def _load(source: RuleSource) -> LearningRule:
    ep = source.entry_point
    where = f"entry point '{ep.name} = {ep.value}' of distribution {source.distribution} {source.version}"
    try:
        obj = ep.load()
    except Exception as exc:
        raise PluginLoadError(f"failed to import learning rule {source.name!r} from {where}: "
                              f"{type(exc).__name__}: {exc}") from exc
    try:
        rule = obj() if isinstance(obj, type) else obj
    except Exception as exc:
        raise PluginLoadError(f"failed to instantiate learning rule {source.name!r} from {where}: {exc}") from exc
    if not isinstance(rule, LearningRule):
        raise PluginLoadError(f"{where} gives {obj!r}, not a nni_bio.LearningRule (subclass or instance)")
    _check_info(rule, source.name, where)
    return rule


def _check_info(rule: LearningRule, name: str, where: str) -> None:
    info = getattr(rule, "info", None)
    if not isinstance(info, RuleInfo):
        raise PluginLoadError(f"{where}: the rule has no `info` (a nni_bio.RuleInfo), found {info!r}")
    if info.api_version is None:
        raise IncompatiblePluginError(
            f"{where} does not declare the nni-bio plugin API version it was written for. Add "
            f"api_version={PLUGIN_API_VERSION} to its RuleInfo (the current version; check that the rule "
            "follows this version's contract)."
        )
    if info.api_version not in SUPPORTED_API_VERSIONS:
        raise IncompatiblePluginError(
            f"{where} targets nni-bio plugin API version {info.api_version}, but this nni-bio supports "
            f"version {', '.join(map(str, sorted(SUPPORTED_API_VERSIONS)))} (current: {PLUGIN_API_VERSION}). "
            "Upgrade the plugin or nni-bio so that they match."
        )
    if info.name != name:
        raise PluginLoadError(f"{where}: the entry point is named {name!r} but the rule calls itself {info.name!r}")


@dataclass(frozen=True)
class RuleStatus:
    """One provider of one rule name, loaded: ``rule`` on success, else ``error``."""

    name: str
    source: RuleSource
    rule: LearningRule | None = None
    error: NniBioError | None = None


def rule_report() -> list[RuleStatus]:
    """Every provider of every rule name, loaded, with the failures as values instead of raised.

    A name offered by two providers gives one row per provider, each carrying the collision error; an
    entry point that fails to import, is not a rule or targets another plugin API version gives a row
    with that error. Sorted by name. This is what ``nni-bio rules`` prints.
    """
    rows = []
    for name, found in sorted(_all_sources().items()):
        if len(found) > 1:
            error = _collision(name, found)
            rows.extend(RuleStatus(name, source, error=error) for source in found)
            continue
        try:
            rows.append(RuleStatus(name, found[0], rule=get_rule(name)))
        except NniBioError as exc:
            rows.append(RuleStatus(name, found[0], error=exc))
    return rows


def register_rule(rule: LearningRule | type[LearningRule]) -> LearningRule:
    """Make a rule available by name without packaging it (a notebook, a test).

    A name that an installed distribution or an earlier registration already provides raises
    :class:`~nni_bio.core.errors.RuleCollisionError`. Usable as a class decorator.
    """
    instance = rule() if isinstance(rule, type) else rule
    name = instance.info.name
    _check_info(instance, name, f"run-time rule {type(instance).__qualname__}")
    existing = _all_sources().get(name)
    if existing:
        raise _collision(name, existing + [RuleSource(name, _RUNTIME, "", type(instance).__qualname__)])
    _runtime[name] = instance
    return rule if isinstance(rule, type) else instance


def unregister_rule(name: str) -> None:
    """Remove a rule added with :func:`register_rule`."""
    _runtime.pop(name, None)
    _loaded.pop(name, None)
