"""Tools an agent may enable. Importing the package registers every built-in in the registry."""

from lunogen.tool import memory as memory
from lunogen.tool import sandbox_tools as sandbox_tools
from lunogen.tool import skill_loader as skill_loader
from lunogen.tool import web_fetch as web_fetch
