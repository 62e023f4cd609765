"""`xds-server validate PATH...`: check manifests the way the server would read them.

One line per problem, `file:doc-index: kind/ns/name: field: message`; warnings carry
`warning:` right after the location. Exit 1 if any error, 0 if none (warnings allowed),
2 if a given path cannot be read.
"""

from __future__ import annotations

import argparse
import sys

from xds_server.config import Problem
from xds_server.sources.files import load_files

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2


def format_problem(problem: Problem) -> str:
    if not problem.warning:
        return str(problem)
    location = f"{problem.where}: " if problem.where else ""
    rest = ": ".join(p for p in (str(problem.ref) if problem.ref else "", problem.message) if p)
    return f"{location}warning: {rest}"


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    """Group by file (first-seen order), then by document index; stable otherwise."""
    rank: dict[str, int] = {}
    keyed = []
    for problem in problems:
        file, _, index = problem.where.rpartition(":")
        if not index.isdigit():
            file, index = problem.where, "0"
        keyed.append(((rank.setdefault(file, len(rank)), int(index)), problem))
    return [p for _, p in sorted(keyed, key=lambda item: item[0])]


def run(args: argparse.Namespace) -> int:
    try:
        _, problems = load_files(args.paths)
    except OSError as exc:
        path = exc.filename if exc.filename is not None else " ".join(args.paths)
        print(f"xds-server validate: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    for problem in _in_file_order(problems):
        print(format_problem(problem))
    return EXIT_INVALID if any(not p.warning for p in problems) else EXIT_OK
