"""Group a parser's options for ``--help`` by a table of option names.

The options are declared where they always were (``nerf_triplane/options.py``,
``data_utils/process.py``); this only moves each one into the help section the table names,
so the table is the one place that says which section an option belongs to. An option the table
does not name stays in the parser's default section, where the tests notice it.
"""
from __future__ import annotations

import argparse


class SectionHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """One entry per option: its help and, when it says something, its default."""

    def _get_help_string(self, action):
        default = action.default
        if default in (None, False, "", argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return f"{action.help} (default: {' '.join(map(str, default)) if isinstance(default, list) else default})"


def group_options(parser: argparse.ArgumentParser, sections: dict[str, tuple[str, ...]]) -> argparse.ArgumentParser:
    """Move the options named in ``sections`` (title -> option dests, in order) into help sections.

    Returns ``parser``, with the sections in the table's order after the positionals, a short
    usage line (the sections list the options) and ``SectionHelpFormatter``; the parser's own
    groups emptied by the move are dropped. Parsing is unchanged: argparse parses from the
    parser's action list; groups only lay out the help.
    """
    # argparse has no public API to move an action between groups; its group lists
    # (_action_groups, _group_actions) have been stable since Python 2.7.
    by_dest = {a.dest: a for a in parser._actions}
    unknown = [d for dests in sections.values() for d in dests if d not in by_dest]
    if unknown:
        raise ValueError(f"help sections name unknown options: {', '.join(unknown)}")
    placed = {d for dests in sections.values() for d in dests}
    for group in parser._action_groups:
        group._group_actions[:] = [a for a in group._group_actions if a.dest not in placed]
    keep = [g for g in parser._action_groups if g._group_actions or g is parser._optionals]
    parser._action_groups[:] = keep
    for title, dests in sections.items():
        group = parser.add_argument_group(title)
        group._group_actions.extend(by_dest[d] for d in dests)
    positionals = " ".join(a.metavar or a.dest.upper() for a in parser._positionals._group_actions)
    parser.usage = f"%(prog)s {positionals} [options]"
    parser.formatter_class = SectionHelpFormatter
    return parser
