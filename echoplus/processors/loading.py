"""
Finding processor factories: by built-in name, by dotted path
C{package.module:Name}, and through the Twisted plugin system
(L{IProcessorFactory} providers in any C{echoplus/plugins/} directory on
C{sys.path}).
"""

from __future__ import annotations

import inspect
import pkgutil
import warnings
from types import ModuleType
from typing import Any

from twisted.plugin import getPlugins, pluginPackagePaths
from zope.interface.exceptions import (
    BrokenImplementation,
    BrokenMethodImplementation,
    DoesNotImplement,
    Invalid,
)
from zope.interface.verify import verifyObject

from echoplus.errors import ConfigError
from echoplus.interfaces import IProcessor, IProcessorFactory
from echoplus.processors.base import ProcessorFactory
from echoplus.processors.builtin import BUILTINS

__all__ = [
    "all_factories",
    "find_factory",
    "plugin_factories",
    "verify_processor",
]


def plugin_factories() -> dict[str, IProcessorFactory]:
    """
    Every L{IProcessorFactory} plugin found in C{echoplus.plugins}, by name.

    @raise ConfigError: a plugin does not provide L{IProcessorFactory}
        correctly; the message names it.
    """
    found: dict[str, IProcessorFactory] = {}
    with warnings.catch_warnings():
        # Editable installs put a path hook, not the checkout, on sys.path;
        # twisted.python.modules warns about it but finds the plugins.
        warnings.filterwarnings(
            "ignore", message=".*not in path importer cache", category=UserWarning
        )
        plugins = list(getPlugins(IProcessorFactory, _plugin_package()))
    for plugin in plugins:
        _verify_factory(_plugin_label(plugin), plugin)
        found.setdefault(plugin.name, plugin)
    return found


def _plugin_package() -> ModuleType:
    """
    The C{echoplus.plugins} package, its C{__path__} extended with the
    C{echoplus/plugins} directories of C{sys.path} entries added since it
    was imported.
    """
    import echoplus.plugins as package

    for path in pluginPackagePaths(package.__name__):
        if path not in package.__path__:
            package.__path__.append(path)
    return package


def _plugin_label(plugin: object) -> str:
    """
    How an error names a plugin: its name and the module defining it.
    """
    name = getattr(plugin, "name", None)
    module = getattr(plugin, "__module__", None) or type(plugin).__module__
    if isinstance(name, str):
        return f"plugin {name!r} (in {module})"
    return f"plugin {plugin!r} (in {module})"


def _verify_factory(label: str, factory: object) -> None:
    """
    Check an L{IProcessorFactory} provider with C{verifyObject}.

    @raise ConfigError: it is not valid; the message starts with C{label}.
    """
    try:
        verifyObject(IProcessorFactory, factory)
    except Invalid as error:
        raise ConfigError(
            f"{label} is not a valid IProcessorFactory: {_faults(error, factory)}"
        ) from None


def _faults(error: Invalid, target: object) -> str:
    """
    What C{verifyObject} found wrong with C{target}, in one line without
    object reprs: C{"Shout has no method process(message, context) and is
    not declared with @implementer(IProcessor)"}.
    """
    missing, other = [], []
    for fault in getattr(error, "exceptions", None) or [error]:
        interface = getattr(fault, "interface", None)
        if isinstance(fault, BrokenImplementation):
            member = fault.name
            if isinstance(member, str) and interface is not None:
                member = interface.get(member, member)
            label = getattr(member, "__name__", member)
            if hasattr(member, "getSignatureString"):
                missing.append(f"has no method {label}{member.getSignatureString()}")
            else:
                missing.append(f"has no attribute {label}")
        elif isinstance(fault, BrokenMethodImplementation):
            method = fault.method
            label = getattr(method, "__name__", method)
            wanted = getattr(method, "getSignatureString", lambda: "(...)")()
            other.append(
                f"has a {label}() that does not match {label}{wanted} ({fault.mess})"
            )
        elif isinstance(fault, DoesNotImplement) and interface is not None:
            other.append(f"is not declared with @implementer({interface.__name__})")
        else:
            other.append(" ".join(str(fault).split()))
    return f"{type(target).__qualname__} {' and '.join(missing + other)}"


def all_factories() -> dict[str, IProcessorFactory]:
    """
    The built-in processors and the plugins, by name; a plugin cannot
    shadow a built-in.
    """
    factories: dict[str, IProcessorFactory] = dict(plugin_factories())
    factories.update((factory.name, factory) for factory in BUILTINS)
    return dict(sorted(factories.items()))


def find_factory(name: str) -> IProcessorFactory:
    """
    Resolve a processor name or C{module:Name} dotted path to a factory.

    @raise ConfigError: nothing by that name; the message lists the known
        names.
    """
    if ":" in name:
        return _load_dotted(name)
    for factory in BUILTINS:
        if factory.name == name:
            return factory
    plugins = plugin_factories()
    if name in plugins:
        return plugins[name]
    known = ", ".join(sorted({f.name for f in BUILTINS} | set(plugins)))
    raise ConfigError(f"unknown processor {name!r} (known processors: {known})")


def _load_dotted(path: str) -> IProcessorFactory:
    """
    Load C{module:Name}: an L{IProcessorFactory} provider, an L{IProcessor}
    provider, a class implementing L{IProcessor}, or a callable returning an
    L{IProcessor}.
    """
    try:
        target: Any = pkgutil.resolve_name(path)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"cannot load processor {path!r}: {error}") from None
    if IProcessorFactory.providedBy(target):
        _verify_factory(f"processor {path!r}", target)
        return target  # type: ignore[no-any-return]
    if IProcessor.providedBy(target):
        return ProcessorFactory(path, f"the processor {path}", lambda: target)
    if callable(target):
        options, any_options = _parameters_of(target)
        return ProcessorFactory(
            path,
            (inspect.getdoc(target) or path).splitlines()[0],
            target,
            options,
            any_options=any_options,
        )
    raise ConfigError(
        f"processor {path!r} is neither an IProcessor, an IProcessorFactory "
        "nor a callable"
    )


def _parameters_of(target: Any) -> tuple[dict[str, str], bool]:
    """
    The keyword options a class or callable accepts, for option checking,
    and whether it takes C{**options} (then any option is passed on).
    """
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {}, True
    parameters = signature.parameters.values()
    named = {
        parameter.name: "option of the constructor"
        for parameter in parameters
        if parameter.kind
        in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    any_options = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    return named, any_options


def verify_processor(name: str, processor: object) -> None:
    """
    Check that what a factory made provides L{IProcessor}.

    @raise ConfigError: it does not; the message names the processor.
    """
    try:
        verifyObject(IProcessor, processor)
    except Invalid as error:
        raise ConfigError(
            f"processor {name!r} is not an IProcessor: {_faults(error, processor)}"
        ) from None
