"""Which backends exist, and choosing one from `LUNOGEN_SANDBOX`."""

from __future__ import annotations

from importlib import import_module

from lunogen.sandbox.base import Backend

# Name → "module:Class". Imported lazily: a backend's module may probe the machine.
BACKENDS: dict[str, str] = {
    "bwrap": "lunogen.sandbox.bwrap:BwrapBackend",
    "gvisor": "lunogen.sandbox.gvisor:GVisorBackend",
    "process": "lunogen.sandbox.process:ProcessBackend",
}
# "auto" tries these, in order; `process` is never chosen unless named.
AUTO_ORDER: tuple[str, ...] = ("bwrap", "gvisor")
ISOLATING: tuple[str, ...] = ("bwrap", "gvisor")


def backend_class(name: str) -> type[Backend]:
    module_name, _, class_name = BACKENDS[name].partition(":")
    cls: type[Backend] = getattr(import_module(module_name), class_name)
    return cls
