"""The bridge's Lua scripts, as package data (see ``optimum_bridge.lua``'s loader)."""
