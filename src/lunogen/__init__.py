"""LunoGen: a self-hostable platform for hosting AI agents."""

import warnings

from authlib.deprecate import AuthlibDeprecationWarning

__version__ = "0.1.0"

# Authlib 1.9's Starlette client imports its own httpx integration, which warns (forced to
# "always") that it is deprecated in favour of httpx2: nothing an operator can act on.
warnings.filterwarnings(
    "ignore", message=r"The httpx module is deprecated", category=AuthlibDeprecationWarning
)
