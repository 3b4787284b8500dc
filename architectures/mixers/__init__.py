"""The zoo: importing this package registers every mixer. Each method is one module here with one decorator;
modules are discovered, so adding a file is all it takes (files starting with "_" are shared helpers)."""
import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}")
