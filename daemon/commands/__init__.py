"""Command matching: typed or transcribed text -> one command event, or why not."""

from perceptd.daemon.commands.matcher import CommandMatch, CommandMatcher, normalise

__all__ = ["CommandMatch", "CommandMatcher", "normalise"]
