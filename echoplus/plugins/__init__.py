"""
The plugin namespace for processor factories.

Any C{echoplus/plugins/} directory on C{sys.path} joins this package, so a
separately installed distribution adds processors by shipping a module here
with module-level L{echoplus.interfaces.IProcessorFactory} providers (which
also provide C{twisted.plugin.IPlugin}).  Do not add an C{__init__.py} to
such a directory in your own distribution.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # type: ignore[name-defined]
__all__: list[str] = []
