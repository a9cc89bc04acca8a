"""Clarion: realtime broadcasting for web apps over the Pusher Channels protocol v7."""

__version__ = "0.1.0"
